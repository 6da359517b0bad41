"""Workers whose database fails mid-task lose nothing and fail nothing, on every broker (SPEC §5)."""

from __future__ import annotations

import time

import pytest

from queues.models import AnalyticsEvent, TaskStatus
from tests.faults.conftest import through
from tests.integration.test_queue_fixtures import (  # noqa: F401 - fixtures
    HANDLERS,
    Broker,
    broker_fixture,
    worker_fixture,
)
from tests.integration.test_worker import publish_as_gateway
from tests.support.backends import requires_postgres
from tests.support.servers import test_database_url as database_url

pytestmark = [pytest.mark.django_db(transaction=True), requires_postgres]

TASKS = 20
CUT_S = 6.0


def wait_until_done(task_ids: list[str], timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = dict(TaskStatus.objects.filter(pk__in=task_ids).values_list("id", "status"))
        statuses = {str(k): v for k, v in statuses.items()}
        finished = [s for s in statuses.values() if s in ("succeeded", "failed")]
        if len(finished) == len(task_ids) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["down", "orphan"])
def test_database_cut_mid_task_loses_no_message_and_fails_none(broker: Broker, worker, relay, fault: str) -> None:
    """20 analytics tasks, the worker's database cut for 6 s while they run: all 20 succeed."""
    if broker.kind == "filesystem":
        pytest.skip("filesystem broker: kept for compatibility, the embedded default is SQLite")
    database = relay(database_url())
    w = worker(
        broker,
        env={
            "DATABASE_URL": through(database_url(), database),
            "GATEWAY_QUEUE_HANDLERS": f"analytics={HANDLERS}.slow_analytics",
            "GATEWAY_DB_TIMEOUT_S": "2",
        },
        queues="analytics",
    )
    task_ids = [publish_as_gateway(broker, "analytics", {"event": f"e{i}"}) for i in range(TASKS)]
    deadline = time.monotonic() + 30
    while TaskStatus.objects.filter(pk__in=task_ids, status="succeeded").count() < 3:
        assert time.monotonic() < deadline, w.log()[-3000:]
        time.sleep(0.05)

    made_before = database.connections_made
    database.set_mode(fault)
    time.sleep(CUT_S)
    database.set_mode("up")

    statuses = wait_until_done(task_ids, timeout_s=45)
    assert sorted(statuses.values()) == ["succeeded"] * TASKS, w.log()[-4000:]
    assert AnalyticsEvent.objects.filter(task_id__in=task_ids).count() == TASKS  # one row each, none twice
    assert broker.depth("analytics") == 0
    assert broker.depth("analytics.dlq") == 0
    if fault == "down":
        assert "task handed back to the queue" in w.log(), "the cut must have hit tasks in flight"
    else:  # the pool's check (or a hung query's timeout) dropped the silent connection and reconnected
        assert database.connections_made > made_before
