"""The publishing API for services (queues.client) against real brokers."""

from __future__ import annotations

import time

import pytest

from queues.client import PublishError, QueueClient
from tests.integration.test_queue_fixtures import Broker, broker_fixture  # noqa: F401 - a fixture
from tests.support.upstream import free_port


def test_publish_returns_once_the_broker_holds_the_message(broker: Broker) -> None:
    client = broker.client()

    task_id = client.publish("email", {"to": "a@example.com"}, request_id="auth-7", callback_url="https://x.test/cb")

    [(headers, message)] = broker.take_all("email")
    assert headers["task"] == "gateway.email"
    assert headers["id"] == task_id
    assert message["task_id"] == task_id
    assert (message["origin"], message["request_id"], message["callback_url"]) == (
        "service",
        "auth-7",
        "https://x.test/cb",
    )
    assert message["body"] == {"to": "a@example.com"}
    if broker.kind == "amqp":
        # The pooled channel that published was put in confirm mode (confirm.select sent).
        producer = client.producers.acquire(block=True, timeout=1)
        try:
            assert producer.channel._confirm_selected is True
        finally:
            producer.release()


def test_publish_to_a_closed_port_raises_quickly() -> None:
    client = QueueClient(f"amqp://guest:guest@127.0.0.1:{free_port()}//", timeout_s=5)

    started = time.monotonic()
    with pytest.raises(PublishError, match="broker did not confirm"):
        client.publish("sms", {"to": "+4915112345678", "message": "x"})
    assert time.monotonic() - started < 5.5


def test_unknown_queue_and_bad_callback_are_refused_before_publishing() -> None:
    client = QueueClient(f"amqp://guest:guest@127.0.0.1:{free_port()}//")

    with pytest.raises(ValueError, match="unknown queue"):
        client.publish("fax", {})
    with pytest.raises(ValueError, match="callback_url"):
        client.publish("sms", {}, callback_url="ftp://example.com")
