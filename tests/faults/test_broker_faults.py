"""A broker that goes down or hangs: 503 within 5 s, never a 202 it cannot back; workers lose nothing (SPEC §5)."""

from __future__ import annotations

import time

import pytest
import requests

from queues.models import TaskStatus
from tests.faults.conftest import through
from tests.integration.test_queue_fixtures import (  # noqa: F401 - fixtures
    HANDLERS,
    Broker,
    broker_fixture,
    worker_fixture,
)
from tests.integration.test_worker import publish_as_gateway
from tests.support.builders import make_public_app, make_service

pytestmark = pytest.mark.django_db(transaction=True)


def network_broker(broker: Broker) -> None:
    if broker.kind in ("sqlite", "filesystem"):
        pytest.skip(f"the {broker.kind} broker is a local file: there is no connection to cut")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["down", "blackhole"])
def test_gateway_answers_503_within_5s_when_the_broker_fails(gateway_server, relay, broker: Broker, fault: str) -> None:
    network_broker(broker)
    make_service("notify", "queue://sms")
    make_public_app("/api/v1/notify/*", methods=["POST"])
    link = relay(broker.url)
    gw = gateway_server(env={**broker.env(), "CELERY_BROKER_URL": through(broker.url, link)})

    def post() -> tuple[requests.Response, float]:
        started = time.monotonic()
        response = requests.post(gw.url + "/api/v1/notify/send", json={"to": "+491511", "message": "x"}, timeout=20)
        return response, time.monotonic() - started

    before = [post()[0] for _ in range(3)]
    link.set_mode(fault)
    during = [post() for _ in range(3)]
    link.set_mode("up")
    after = [post()[0] for _ in range(3)]

    assert [r.status_code for r in before] == [202] * 3
    assert [r.status_code for r, _ in during] == [503] * 3, [r.text for r, _ in during]
    assert {r.json()["error"]["code"] for r, _ in during} == {"queue_unavailable"}
    assert max(elapsed for _, elapsed in during) <= 5.5
    assert 202 in [r.status_code for r in after]
    accepted = [r.json()["task_id"] for r in (*before, *after) if r.status_code == 202]
    # A 202 always names a message the broker holds; the refused ones left no task behind.
    assert broker.depth("sms") == len(accepted)
    assert TaskStatus.objects.count() == len(accepted)
    print(f"\n[{broker.kind} {fault}] 503 after at most {max(e for _, e in during):.2f}s")


@pytest.mark.timeout(60)
def test_worker_loses_nothing_when_its_broker_goes_down(broker: Broker, worker, relay) -> None:
    network_broker(broker)
    link = relay(broker.url)
    linked = Broker(broker.kind, through(broker.url, link), broker.folder)
    w = worker(linked, env={"GATEWAY_QUEUE_HANDLERS": f"analytics={HANDLERS}.slow_analytics"}, queues="analytics")
    task_ids = [publish_as_gateway(broker, "analytics", {"event": f"b{i}"}) for i in range(10)]
    deadline = time.monotonic() + 30
    while TaskStatus.objects.filter(pk__in=task_ids, status="succeeded").count() < 2:
        assert time.monotonic() < deadline, w.log()[-3000:]
        time.sleep(0.05)

    link.set_mode("down")
    time.sleep(5)
    link.set_mode("up")

    deadline = time.monotonic() + 60
    while TaskStatus.objects.filter(pk__in=task_ids, status="succeeded").count() < len(task_ids):
        assert time.monotonic() < deadline, w.log()[-4000:]
        time.sleep(0.2)
    assert not TaskStatus.objects.filter(pk__in=task_ids, status="failed").exists()
    assert broker.depth("analytics") == 0
