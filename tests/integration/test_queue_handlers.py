"""Default queue handlers against real loopback providers, and queue stats against a real broker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest

from gateway_core.conf import gateway_config
from queues.handlers import ai, analytics, email, execution, sms
from queues.handlers.base import InvalidPayload, PermanentError, TaskInput, TransientError
from queues.messages import message_build
from queues.models import AnalyticsEvent
from queues.selectors import queue_stats
from tests.integration.test_queue_fixtures import Broker, default_broker_fixture  # noqa: F401 - a fixture
from tests.support.builders import make_service
from tests.support.upstream import EchoUpstream, closed_port_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def gateway_settings(settings) -> Iterator[Callable[..., None]]:
    """Override ``GATEWAY`` knobs for one test (the config is read once, so its cache is reset)."""

    def override(**knobs: object) -> None:
        settings.GATEWAY = {**settings.GATEWAY, **{k.upper(): v for k, v in knobs.items()}}
        gateway_config.cache_clear()

    yield override
    gateway_config.cache_clear()


def task(queue: str, body: object, **fields: object) -> TaskInput:
    return TaskInput(task_id=str(uuid.uuid4()), queue=queue, body=body, request_id="req-h", **fields)


def answer(status: int, body: bytes = b'{"ok": true}'):
    def handler(h, received) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return handler


def test_email_is_sent_with_the_configured_backend(mailoutbox) -> None:
    body = {"to": ["a@example.com", "b@example.com"], "subject": "Reset", "text": "link", "html": "<a>link</a>"}

    result = email.handle(task("email", body))

    assert result == {"sent": 1, "to": ["a@example.com", "b@example.com"]}
    [sent] = mailoutbox
    assert (sent.subject, sent.body, sent.to) == ("Reset", "link", ["a@example.com", "b@example.com"])
    assert sent.alternatives[0][0] == "<a>link</a>"


def test_sms_is_posted_to_the_provider(gateway_settings, echo_upstream: EchoUpstream) -> None:
    gateway_settings(sms_provider_url=echo_upstream.url + "/messages")

    result = sms.handle(task("sms", {"to": "+49 151 1234-5678", "message": "Your code is 123456"}))

    received = echo_upstream.last
    assert (received.method, received.target) == ("POST", "/messages")
    assert json.loads(received.body) == {"to": "+4915112345678", "message": "Your code is 123456"}
    assert received.header("X-Request-ID") == "req-h"
    assert result["to"] == "+4915112345678"


def test_sms_without_a_provider_is_only_logged(gateway_settings) -> None:
    gateway_settings(sms_provider_url="")

    assert sms.handle(task("sms", {"to": "+4915112345678", "message": "hi"})) == {
        "to": "+4915112345678",
        "logged": True,
    }


def test_ai_answer_is_the_result(gateway_settings, echo_upstream: EchoUpstream) -> None:
    echo_upstream.set_handler(answer(200, b'{"completion": "hello"}'))
    gateway_settings(ai_service_url=echo_upstream.url + "/v1/complete")

    result = ai.handle(task("ai", {"prompt": "hi"}))

    assert result == {"completion": "hello"}
    assert json.loads(echo_upstream.last.body) == {"prompt": "hi"}


@pytest.mark.parametrize(("status", "error"), [(503, TransientError), (429, TransientError), (422, PermanentError)])
def test_provider_answers_map_to_retry_or_failure(gateway_settings, echo_upstream: EchoUpstream, status, error) -> None:
    echo_upstream.set_handler(answer(status))
    gateway_settings(ai_service_url=echo_upstream.url)

    with pytest.raises(error):
        ai.handle(task("ai", {"prompt": "hi"}))


def test_unreachable_provider_is_transient(gateway_settings) -> None:
    gateway_settings(ai_service_url=closed_port_url())

    with pytest.raises(TransientError):
        ai.handle(task("ai", {"prompt": "hi"}))


def test_ai_without_a_service_url_fails_permanently(gateway_settings) -> None:
    gateway_settings(ai_service_url="")

    with pytest.raises(PermanentError, match="AI_SERVICE_URL"):
        ai.handle(task("ai", {"prompt": "hi"}))


def test_execution_goes_to_the_service_through_the_routing_data(gateway_settings, echo_upstream: EchoUpstream) -> None:
    closed = closed_port_url()
    make_service(
        "pipeline", closed, upstream_prefix="/run", current_version="v2", versions=[("v2", echo_upstream.url + "/p")]
    )
    gateway_settings(service_keys={"PIPELINE": "svc-key"})
    app_id = str(uuid.uuid4())

    result = execution.handle(task("execution", {"job": 7}, path="/jobs", query="dry=1", application_id=app_id))

    received = echo_upstream.last
    assert (received.method, received.target) == ("POST", "/p/run/jobs?dry=1")
    assert json.loads(received.body) == {"job": 7}
    assert received.header("X-Service-Key") == "svc-key"
    assert received.header("X-Consumer-ID") == app_id
    assert result["method"] == "POST"


def test_execution_without_the_service_fails_permanently(gateway_settings) -> None:
    with pytest.raises(PermanentError, match="pipeline"):
        execution.handle(task("execution", {"job": 1}))


def test_analytics_events_are_stored_once_even_when_redelivered() -> None:
    app_id = str(uuid.uuid4())
    one = task("analytics", {"event": "signup", "timestamp": "2026-01-02T03:04:05Z"}, application_id=app_id)

    analytics.handle(one)
    analytics.handle(one)

    [event] = AnalyticsEvent.objects.all()
    assert (event.name, str(event.application_id), event.occurred_at.isoformat()) == (
        "signup",
        app_id,
        "2026-01-02T03:04:05+00:00",
    )


def test_analytics_batch_with_one_bad_event_is_refused_whole() -> None:
    with pytest.raises(InvalidPayload, match="event 1"):
        analytics.handle(task("analytics", {"events": [{"event": "ok"}, {"properties": {}}]}))
    assert not AnalyticsEvent.objects.exists()


def test_queue_stats_report_depth_and_dead_letters(settings, default_broker: Broker) -> None:
    settings.CELERY_BROKER_URL = default_broker.url
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = default_broker.transport_options
    client = default_broker.client()
    for _ in range(2):
        client.send(message_build(queue="sms", body={}))

    stats = {row["queue"]: row for row in queue_stats()}

    assert set(stats) == {"email", "sms", "ai", "analytics", "execution"}
    assert stats["sms"]["depth"] == 2
    assert stats["email"]["depth"] == 0
    assert stats["sms"]["dead_letter_depth"] == 0
    if default_broker.kind == "amqp":
        assert stats["sms"]["consumers"] == 0
    else:
        assert stats["sms"]["consumers"] is None


def test_queue_stats_are_null_when_the_broker_is_down(settings) -> None:
    settings.CELERY_BROKER_URL = closed_port_url().replace("http://", "amqp://guest:guest@") + "//"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}

    stats = queue_stats(timeout_s=1)

    assert [row["depth"] for row in stats] == [None] * 5


def test_queue_handlers_setting_plugs_in_a_function_by_import_string(gateway_settings) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from queues.registry import handler_for
    from tests.integration.test_queue_fixtures import record

    handler_for.cache_clear()
    try:
        gateway_settings(queue_handlers={"email": "tests.integration.test_queue_fixtures.record"})
        assert handler_for("email") is record
        assert handler_for("sms") is sms.handle

        handler_for.cache_clear()
        gateway_settings(queue_handlers={"email": "myproject.nowhere.send"})
        with pytest.raises(ImproperlyConfigured, match="GATEWAY_QUEUE_HANDLERS"):
            handler_for("email")
    finally:
        handler_for.cache_clear()
