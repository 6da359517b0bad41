"""Queue routes through a live gateway (real gunicorn) and real brokers (SPEC §5)."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
import requests

from queues.models import TaskStatus
from tests.integration.test_queue_fixtures import (  # noqa: F401 - fixtures
    HANDLERS,
    Broker,
    broker_fixture,
    default_broker_fixture,
    wait_for_task,
    worker_fixture,
)
from tests.support.builders import make_app, make_key, make_public_app, make_service
from tests.support.upstream import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def notify_config() -> dict[str, object]:
    """A queue route /api/v1/notify -> queue://sms, and two applications with a key each."""
    make_service("notify", "queue://sms")
    acme = make_app("acme", entries=[{"path": "/api/v1/notify/*", "methods": ["POST"]}])
    other = make_app("other", entries=[{"path": "/api/v1/notify/*", "methods": ["POST"]}])
    _, acme_key = make_key(acme)
    _, other_key = make_key(other)
    return {"acme": acme, "acme_key": acme_key, "other": other, "other_key": other_key}


def post(gw, path: str, body: bytes = b'{"to": "+4915112345678", "message": "hi"}', **headers: str):
    sent = {"Content-Type": "application/json", **headers}
    return requests.post(gw.url + path, data=body, headers=sent, timeout=15)


def test_queue_route_answers_202_once_the_broker_holds_the_message(
    gateway_server, default_broker: Broker, notify_config
) -> None:
    gw = gateway_server(env=default_broker.env())
    response = post(
        gw,
        "/api/v1/notify/send?x=1",
        **{
            "X-API-Key": notify_config["acme_key"],
            "X-Request-ID": "req-202",
            "X-Callback-URL": "https://hooks.example.com/done",
            "Accept-Language": "de",
            "Cookie": "session=secret",
            "X-Consumer-ID": "spoofed",
        },
    )

    assert response.status_code == 202, response.text
    body = response.json()
    task_id = body["task_id"]
    assert body == {"task_id": task_id, "status": "queued", "queue": "sms", "status_url": f"/api/v1/tasks/{task_id}"}
    assert uuid.UUID(task_id)
    assert response.headers["Location"] == body["status_url"]
    assert response.headers["X-Request-ID"] == "req-202"
    assert TaskStatus.objects.get(pk=task_id).status == "queued"

    [(_, message)] = default_broker.take_all("sms")
    assert message["task_id"] == task_id
    assert message["queue"] == "sms"
    assert message["request_id"] == "req-202"
    assert message["application_id"] == str(notify_config["acme"].id)
    assert (message["method"], message["path"], message["query"]) == ("POST", "/api/v1/notify/send", "x=1")
    assert message["body"] == {"to": "+4915112345678", "message": "hi"}
    assert message["callback_url"] == "https://hooks.example.com/done"
    assert message["received_at"]
    headers = message["headers"]
    assert headers["x-consumer-id"] == str(notify_config["acme"].id)
    assert headers["x-consumer-name"] == "acme"
    assert headers["accept-language"] == "de"
    assert headers["content-type"] == "application/json"
    assert not {"x-api-key", "cookie", "authorization"} & set(headers)
    assert notify_config["acme_key"] not in str(message)


def test_published_task_runs_on_a_worker_and_its_status_shows_succeeded(
    gateway_server, broker: Broker, worker, notify_config
) -> None:
    gw = gateway_server(env=broker.env())
    w = worker(broker, env={"GATEWAY_QUEUE_HANDLERS": f"sms={HANDLERS}.record"}, queues="sms")
    key = notify_config["acme_key"]

    accepted = post(gw, "/api/v1/notify/send", **{"X-API-Key": key})
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    wait_for_task(task_id, {"succeeded", "failed"}, log=w.log)

    status = requests.get(gw.url + accepted.headers["Location"], headers={"X-API-Key": key}, timeout=5)
    assert status.status_code == 200
    shown = status.json()
    assert set(shown) == {"task_id", "queue", "status", "result", "error", "created_at", "updated_at"}
    assert (shown["task_id"], shown["queue"], shown["status"], shown["error"]) == (task_id, "sms", "succeeded", None)
    assert shown["result"]["body"] == {"to": "+4915112345678", "message": "hi"}
    assert shown["result"]["application_id"] == str(notify_config["acme"].id)
    assert shown["created_at"] <= shown["updated_at"]


@pytest.mark.parametrize(
    ("method", "content_type", "body", "status", "code"),
    [
        ("GET", None, b"", 405, "method_not_allowed"),
        ("PUT", "application/json", b"{}", 405, "method_not_allowed"),
        ("POST", "text/plain", b"{}", 415, "unsupported_media_type"),
        ("POST", None, b"{}", 415, "unsupported_media_type"),
        ("POST", "application/json", b"{not json", 400, "invalid_json"),
        ("POST", "application/json", b"", 400, "invalid_json"),
    ],
)
def test_bad_requests_are_refused_and_nothing_is_published(
    gateway_server, default_broker: Broker, method, content_type, body, status, code
) -> None:
    make_service("notify", "queue://sms")
    make_public_app("/api/v1/notify/*")
    gw = gateway_server(env=default_broker.env())
    headers = {"Content-Type": content_type} if content_type else {}

    response = requests.request(method, gw.url + "/api/v1/notify", data=body, headers=headers, timeout=10)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    if status == 405:
        assert response.headers["Allow"] == "POST"
    assert default_broker.depth("sms") == 0
    assert not TaskStatus.objects.exists()


def test_broker_down_answers_503_and_keeps_no_task(gateway_server, notify_config) -> None:
    gw = gateway_server(env={"CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}//"})

    started = time.monotonic()
    response = post(gw, "/api/v1/notify/send", **{"X-API-Key": notify_config["acme_key"]})

    assert time.monotonic() - started < 5.5
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_unavailable"
    assert not TaskStatus.objects.exists()


def test_broker_that_never_answers_gets_503_within_five_seconds(gateway_server, notify_config) -> None:
    with socket.socket() as silent:  # accepts TCP connections, never speaks AMQP
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        gw = gateway_server(env={"CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{port}//"})

        started = time.monotonic()
        response = post(gw, "/api/v1/notify/send", **{"X-API-Key": notify_config["acme_key"]})
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_unavailable"
    assert elapsed < 6.5
    assert not TaskStatus.objects.exists()


def test_same_idempotency_key_from_the_same_application_queues_once(
    gateway_server, default_broker: Broker, notify_config
) -> None:
    gw = gateway_server(env=default_broker.env())
    acme = {"X-API-Key": notify_config["acme_key"], "Idempotency-Key": "order-42"}

    first = post(gw, "/api/v1/notify/send", **acme)
    again = post(gw, "/api/v1/notify/send", **acme)
    other_app = post(
        gw, "/api/v1/notify/send", **{"X-API-Key": notify_config["other_key"], "Idempotency-Key": "order-42"}
    )

    assert (first.status_code, again.status_code, other_app.status_code) == (202, 202, 202)
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert other_app.json()["task_id"] != first.json()["task_id"]
    published = [message["task_id"] for _, message in default_broker.take_all("sms")]
    assert sorted(published) == sorted([first.json()["task_id"], other_app.json()["task_id"]])


def test_task_status_is_shown_only_to_the_creating_application(
    gateway_server, default_broker: Broker, notify_config
) -> None:
    gw = gateway_server(env=default_broker.env())
    accepted = post(gw, "/api/v1/notify/send", **{"X-API-Key": notify_config["acme_key"]})
    status_url = gw.url + accepted.json()["status_url"]

    def get(url: str, **headers: str) -> requests.Response:
        return requests.get(url, headers=headers, timeout=5)

    own = get(status_url, **{"X-API-Key": notify_config["acme_key"]})
    foreign = get(status_url, **{"X-API-Key": notify_config["other_key"]})
    anonymous = get(status_url)
    unknown = get(gw.url + f"/api/v1/tasks/{uuid.uuid4()}", **{"X-API-Key": notify_config["acme_key"]})
    garbage = get(gw.url + "/api/v1/tasks/not-a-uuid", **{"X-API-Key": notify_config["acme_key"]})
    bad_key = get(status_url, **{"X-API-Key": "gk_000000000000.wrong"})

    assert own.status_code == 200
    assert own.json()["status"] == "queued"
    assert (foreign.status_code, foreign.json()["error"]["code"]) == (404, "task_not_found")
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "missing_api_key")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "task_not_found")
    assert (garbage.status_code, garbage.json()["error"]["code"]) == (404, "task_not_found")
    assert (bad_key.status_code, bad_key.json()["error"]["code"]) == (401, "invalid_api_key")
    assert foreign.json() == {"error": {**foreign.json()["error"]}}  # SPEC error shape, nothing else
    assert own.headers["X-Request-ID"]


def test_anonymous_task_on_a_public_route_is_shown_to_whoever_holds_its_id(
    gateway_server, default_broker: Broker
) -> None:
    make_service("events", "queue://analytics")
    make_public_app("/api/v1/events/*")
    someone = make_app("someone")
    _, key = make_key(someone)
    gw = gateway_server(env=default_broker.env())

    accepted = post(gw, "/api/v1/events/track", body=b'{"event": "page_view"}')
    assert accepted.status_code == 202, accepted.text
    status_url = gw.url + accepted.json()["status_url"]

    assert requests.get(status_url, timeout=5).json()["status"] == "queued"
    assert requests.get(status_url, headers={"X-API-Key": key}, timeout=5).status_code == 200
    [(_, message)] = default_broker.take_all("analytics")
    assert message["application_id"] is None


def test_rate_limit_applies_to_queue_routes(gateway_server, default_broker: Broker) -> None:
    make_service("notify", "queue://sms")
    acme = make_app("acme", entries=[{"path": "/api/v1/notify/*", "rate_limit": 1}])
    _, key = make_key(acme)
    gw = gateway_server(env=default_broker.env())

    first = post(gw, "/api/v1/notify/send", **{"X-API-Key": key})
    second = post(gw, "/api/v1/notify/send", **{"X-API-Key": key})

    assert first.status_code == 202
    assert first.headers["RateLimit-Limit"] == "1"
    assert second.status_code == 429
    assert [m["task_id"] for _, m in default_broker.take_all("sms")] == [first.json()["task_id"]]


def test_browsers_may_read_task_status_from_a_listed_origin(gateway_server, default_broker: Broker) -> None:
    make_service("notify", "queue://sms")
    acme = make_app("acme", entries=[{"path": "/api/v1/notify/*"}], allowed_origins=["https://app.example.com"])
    _, key = make_key(acme)
    gw = gateway_server(env=default_broker.env())
    status_url = gw.url + post(gw, "/api/v1/notify/send", **{"X-API-Key": key}).json()["status_url"]
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-api-key"}

    allowed = requests.options(status_url, headers={"Origin": "https://app.example.com", **preflight}, timeout=5)
    refused = requests.options(status_url, headers={"Origin": "https://evil.example.com", **preflight}, timeout=5)
    read = requests.get(status_url, headers={"Origin": "https://app.example.com", "X-API-Key": key}, timeout=5)

    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "X-API-Key" in allowed.headers["Access-Control-Allow-Headers"]
    assert allowed.headers["Access-Control-Max-Age"] == "600"
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "cors_origin_not_allowed")
    assert read.status_code == 200
    assert read.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Origin" in read.headers["Vary"]
