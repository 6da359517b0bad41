"""Workers against real brokers: status life cycle, retries, dead letters, SIGKILL, callbacks."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import time

import pytest

from queues.callbacks import verify
from queues.messages import message_build
from queues.models import AnalyticsEvent
from queues.services import task_create
from tests.integration.test_queue_fixtures import (  # noqa: F401 - fixtures
    HANDLERS,
    Broker,
    broker_fixture,
    wait_for_file,
    wait_for_task,
    worker_fixture,
)
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.django_db(transaction=True)


def publish_as_gateway(broker: Broker, queue: str, body: object, **fields: object) -> str:
    """Publish like the gateway's producer: status row first, then the confirmed message."""
    message = message_build(queue=queue, body=body, origin="gateway", **fields)
    task_create(
        task_id=message.task_id,
        queue=queue,
        application_id=message.application_id,
        request_id=message.request_id,
    )
    broker.client().send(message)
    return message.task_id


def test_task_runs_on_a_real_worker_and_succeeds(broker: Broker, worker) -> None:
    w = worker(broker, env={"GATEWAY_QUEUE_HANDLERS": f"sms={HANDLERS}.record"}, queues="sms")
    task_id = publish_as_gateway(broker, "sms", {"to": "+4915112345678"}, request_id="req-1", path="/send", query="a=1")

    task = wait_for_task(task_id, {"succeeded", "failed"}, log=w.log)

    assert task.status == "succeeded", task.error
    assert task.attempts == 1
    assert task.result["body"] == {"to": "+4915112345678"}
    assert task.result["request_id"] == "req-1"
    assert (task.result["path"], task.result["query"]) == ("/send", "a=1")
    assert broker.depth("sms") == 0
    assert "+4915112345678" not in w.log(), "worker logs name tasks, never their bodies"


def test_default_analytics_handler_stores_a_batch(broker: Broker, worker) -> None:
    w = worker(broker, queues="analytics")
    body = {"events": [{"event": "signup", "properties": {"plan": "pro"}}, {"event": "login"}]}
    task_id = publish_as_gateway(broker, "analytics", body)

    task = wait_for_task(task_id, {"succeeded", "failed"}, log=w.log)

    assert task.status == "succeeded", task.error
    assert task.result == {"stored": 2}
    stored = AnalyticsEvent.objects.filter(task_id=task_id).order_by("name")
    assert [(e.name, e.properties) for e in stored] == [("login", {}), ("signup", {"plan": "pro"})]


def test_invalid_payload_fails_at_once_and_is_dead_lettered(broker: Broker, worker) -> None:
    w = worker(broker, queues="email")
    task_id = publish_as_gateway(broker, "email", {"to": "not-an-address", "subject": "Hi", "text": "x"})

    task = wait_for_task(task_id, {"failed", "succeeded"}, log=w.log)

    assert task.status == "failed"
    assert task.attempts == 1, "an invalid payload must not be retried"
    assert "to" in task.error
    dead = broker.take_all("email.dlq")
    assert [m["task_id"] for _, m in dead] == [task_id]
    assert "invalid address" in dead[0][0]["x-gateway-error"]


def test_transient_failure_retries_with_backoff_then_dead_letters(broker: Broker, worker) -> None:
    w = worker(broker, env={"GATEWAY_QUEUE_HANDLERS": f"ai={HANDLERS}.always_transient"}, queues="ai")
    task_id = publish_as_gateway(broker, "ai", {"prompt": "hello"})

    task = wait_for_task(task_id, {"failed", "succeeded"}, log=w.log)

    assert task.status == "failed"
    assert task.attempts == 3, "one attempt plus GATEWAY_TASK_MAX_RETRIES=2 retries"
    assert "provider unavailable" in task.error
    assert "3 attempts" in task.error
    assert w.log().count("task retrying") == 2
    dead = broker.take_all("ai.dlq")
    assert [m["task_id"] for _, m in dead] == [task_id]
    assert dead[0][1]["body"] == {"prompt": "hello"}
    assert broker.depth("ai") == 0


def test_transient_failure_then_success(broker: Broker, worker) -> None:
    w = worker(broker, env={"GATEWAY_QUEUE_HANDLERS": f"ai={HANDLERS}.transient_once"}, queues="ai")
    task_id = publish_as_gateway(broker, "ai", {"prompt": "hello"})

    task = wait_for_task(task_id, {"failed", "succeeded"}, log=w.log)

    assert task.status == "succeeded"
    assert task.result == {"attempt": 2}
    assert task.error is None
    assert broker.depth("ai.dlq") == 0


def test_pool_process_killed_mid_task_loses_nothing(broker: Broker, worker) -> None:
    """reject_on_worker_lost: the killed process's message goes back and is completed."""
    handlers = {"GATEWAY_QUEUE_HANDLERS": f"execution={HANDLERS}.hang_on_first_attempt"}
    w = worker(broker, env=handlers, queues="execution")
    task_id = publish_as_gateway(broker, "execution", {"job": 1})
    pid = int(wait_for_file(worker.markers / f"{task_id}.started"))
    assert wait_for_task(task_id, {"started"}).attempts == 1

    os.kill(pid, signal.SIGKILL)

    task = wait_for_task(task_id, {"succeeded", "failed"}, log=w.log)
    assert task.status == "succeeded"
    assert task.result["attempt"] == 2
    assert task.result["pid"] != pid


def test_whole_worker_killed_mid_task_another_worker_completes_it(broker: Broker, worker) -> None:
    """acks_late: a SIGKILLed worker never acknowledged, so the broker redelivers to another.

    The embedded SQLite broker does so once the dead worker's lease expires (4 s here).
    """
    if broker.kind == "filesystem":
        pytest.skip("filesystem broker: a message taken by a worker that is killed as a whole is lost (README)")
    handlers = {"GATEWAY_QUEUE_HANDLERS": f"execution={HANDLERS}.hang_on_first_attempt"}
    first = worker(broker, env=handlers, queues="execution", name="first")
    task_id = publish_as_gateway(broker, "execution", {"job": 2})
    wait_for_file(worker.markers / f"{task_id}.started")

    first.kill()
    second = worker(broker, env=handlers, queues="execution", name="second")

    task = wait_for_task(task_id, {"succeeded", "failed"}, timeout_s=40, log=second.log)
    assert task.status == "succeeded"
    assert task.result["attempt"] == 2


def test_callback_is_posted_with_a_verifiable_signature(broker: Broker, worker, echo_upstream: EchoUpstream) -> None:
    secret = "callback-test-secret"
    w = worker(
        broker,
        env={"GATEWAY_QUEUE_HANDLERS": f"sms={HANDLERS}.transient_once", "GATEWAY_CALLBACK_SECRET": secret},
        queues="sms",
    )
    task_id = publish_as_gateway(broker, "sms", {"to": "+4915112345678"}, callback_url=echo_upstream.url + "/hook")

    wait_for_task(task_id, {"succeeded"}, log=w.log)
    deadline = time.monotonic() + 15
    while not echo_upstream.received and time.monotonic() < deadline:
        time.sleep(0.05)

    assert len(echo_upstream.received) == 1, w.log()[-3000:]
    received = echo_upstream.last
    assert (received.method, received.target) == ("POST", "/hook")
    assert json.loads(received.body) == {
        "task_id": task_id,
        "status": "succeeded",
        "result": {"attempt": 2},
        "error": None,
    }
    expected = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    assert received.header("X-Gateway-Signature") == expected
    assert verify(received.body, received.header("X-Gateway-Signature"), secret)
    assert not verify(received.body, received.header("X-Gateway-Signature"), "another-secret")


def test_failed_callback_delivery_is_retried(broker: Broker, worker, echo_upstream: EchoUpstream) -> None:
    answers = iter([503, 200])

    def flaky_receiver(handler, received) -> None:
        handler.send_response(next(answers, 200))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    echo_upstream.set_handler(flaky_receiver)
    w = worker(broker, env={"GATEWAY_QUEUE_HANDLERS": f"sms={HANDLERS}.record"}, queues="sms")
    task_id = publish_as_gateway(broker, "sms", {"to": "+4915112345678"}, callback_url=echo_upstream.url + "/hook")

    wait_for_task(task_id, {"succeeded"}, log=w.log)
    deadline = time.monotonic() + 15
    while len(echo_upstream.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)

    assert len(echo_upstream.received) == 2, w.log()[-3000:]
    assert echo_upstream.received[0].body == echo_upstream.received[1].body
    assert "/hook" not in w.log(), "callback URLs (they may carry credentials) stay out of worker logs"


def test_a_callback_to_an_internal_address_is_refused(broker: Broker, worker, echo_upstream: EchoUpstream) -> None:
    w = worker(
        broker,
        env={"GATEWAY_QUEUE_HANDLERS": f"sms={HANDLERS}.record", "GATEWAY_CALLBACK_ALLOW_PRIVATE": "false"},
        queues="sms",
    )
    task_id = publish_as_gateway(broker, "sms", {"to": "+4915112345678"}, callback_url=echo_upstream.url + "/hook")

    task = wait_for_task(task_id, {"succeeded"}, log=w.log)
    deadline = time.monotonic() + 15
    while "callback refused" not in w.log() and time.monotonic() < deadline:
        time.sleep(0.05)

    assert "callback refused" in w.log(), w.log()[-3000:]
    assert echo_upstream.received == []  # nothing was sent to the loopback receiver
    assert task.status == "succeeded"  # the outcome stands; only its delivery was refused


def test_a_services_own_callback_may_point_at_an_internal_address(broker: Broker, worker, echo_upstream) -> None:
    w = worker(
        broker,
        env={"GATEWAY_QUEUE_HANDLERS": f"sms={HANDLERS}.record", "GATEWAY_CALLBACK_ALLOW_PRIVATE": "false"},
        queues="sms",
    )
    message = message_build(
        queue="sms", body={"to": "+4915112345678"}, origin="service", callback_url=echo_upstream.url + "/hook"
    )
    broker.client().send(message)

    wait_for_task(message.task_id, {"succeeded"}, log=w.log)
    deadline = time.monotonic() + 15
    while not echo_upstream.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(echo_upstream.received) == 1, w.log()[-3000:]


def test_message_whose_gateway_record_was_discarded_is_not_run(broker: Broker, worker) -> None:
    """A publish the gateway answered 503 for (its record deleted) must never run later."""
    w = worker(broker, env={"GATEWAY_QUEUE_HANDLERS": f"sms={HANDLERS}.record"}, queues="sms")
    orphan = message_build(queue="sms", body={"n": 1}, origin="gateway")
    broker.client().send(orphan)  # no status record, as after a discarded publish
    follower = publish_as_gateway(broker, "sms", {"n": 2})

    wait_for_task(follower, {"succeeded"}, log=w.log)

    from queues.models import TaskStatus

    assert not TaskStatus.objects.filter(pk=orphan.task_id).exists()
    assert "task message dropped" in w.log()


def test_service_published_task_gets_a_status_record(broker: Broker, worker) -> None:
    """The publishing API for services: the worker records status for messages it did not see queued."""
    w = worker(broker, env={"GATEWAY_QUEUE_HANDLERS": f"email={HANDLERS}.record"}, queues="email")
    task_id = broker.client().publish(
        "email", {"to": "a@example.com", "subject": "Reset", "text": "x"}, request_id="auth-1"
    )

    task = wait_for_task(task_id, {"succeeded", "failed"}, log=w.log)

    assert task.status == "succeeded"
    assert task.request_id == "auth-1"
    assert task.result["body"]["subject"] == "Reset"
