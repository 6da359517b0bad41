"""Pure queue logic: message schema, safe headers, signatures, backoff, topology, validation."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import uuid

import pytest

from queues import topology
from queues.callbacks import (
    CallbackFailed,
    CallbackRefused,
    callback_body,
    callback_send,
    refuse_internal_address,
    sign,
    verify,
)
from queues.handlers.base import InvalidPayload, TaskInput
from queues.handlers.email import handle as email_handle
from queues.handlers.sms import handle as sms_handle
from queues.messages import InvalidMessage, is_callback_url, message_build, message_parse, safe_headers
from queues.producer import _is_json_type
from queues.tasks import backoff_delay


def test_built_message_round_trips_through_json_and_parse() -> None:
    built = message_build(
        queue="email",
        body={"to": "a@example.com"},
        origin="gateway",
        request_id="r-1",
        application_id=str(uuid.uuid4()),
        path="/api/v1/mail/send",
        query="a=1&b=2",
        headers={"Content-Type": "application/json", "X-Request-ID": "r-1"},
        callback_url="https://example.com/hook",
    )

    parsed = message_parse(json.loads(json.dumps(built.to_dict())), frozenset({"email"}))

    assert parsed == built
    assert parsed.schema == 1
    assert parsed.received_at.endswith("+00:00")


def test_safe_headers_drop_credentials_and_lower_case_names() -> None:
    headers = {
        "X-API-Key": "gk_1.secret",
        "Authorization": "Bearer x",
        "Cookie": "a=b",
        "X-Gateway-Internal": "1",
        "Accept": "application/json",
        "TraceParent": "00-abc",
    }

    assert safe_headers(headers) == {"accept": "application/json", "traceparent": "00-abc"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not a dict", "not a JSON object"),
        ({"schema": 2, "task_id": str(uuid.uuid4()), "queue": "email", "body": {}}, "unsupported schema"),
        ({"schema": 1, "task_id": "nope", "queue": "email", "body": {}}, "task_id"),
        ({"schema": 1, "task_id": str(uuid.uuid4()), "queue": "sms", "body": {}}, "unknown queue"),
        ({"schema": 1, "task_id": str(uuid.uuid4()), "queue": "email"}, "body is missing"),
        (
            {"schema": 1, "task_id": str(uuid.uuid4()), "queue": "email", "body": {}, "callback_url": "ftp://x"},
            "callback_url",
        ),
        (
            {"schema": 1, "task_id": str(uuid.uuid4()), "queue": "email", "body": {}, "headers": {"a": 1}},
            "headers",
        ),
    ],
)
def test_invalid_messages_are_refused_with_the_reason(raw: object, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        message_parse(raw, frozenset({"email"}))


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.example.com/x", True),
        ("http://10.0.0.1:8080/cb", True),
        ("ftp://example.com/x", False),
        ("javascript:alert(1)", False),
        ("https://", False),
        ("/relative", False),
    ],
)
def test_only_absolute_http_urls_are_callback_urls(url: str, ok: bool) -> None:
    assert is_callback_url(url) is ok


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    body = callback_body(task_id="t", status="succeeded", result={"b": 1, "a": 2}, error=None)

    assert body == b'{"error":null,"result":{"a":2,"b":1},"status":"succeeded","task_id":"t"}'
    assert sign(body, "s3cret") == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert verify(body, sign(body, "s3cret"), "s3cret")
    assert not verify(body + b" ", sign(body, "s3cret"), "s3cret")
    assert not verify(body, sign(body, "s3cret"), "other")


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, base_s=2.0, max_s=60.0, rng=rng) for n in range(8)]

    for n, delay in enumerate(delays):
        full = min(60.0, 2.0 * 2**n)
        assert full / 2 <= delay <= full
    assert delays[-1] <= 60.0
    assert len({round(d, 6) for d in delays}) == len(delays), "jitter spreads the delays"


def test_backoff_does_not_overflow_on_huge_retry_counts() -> None:
    assert backoff_delay(10_000, base_s=1.0, max_s=30.0) <= 30.0


def test_each_work_queue_dead_letters_to_its_own_queue() -> None:
    for name in topology.QUEUE_NAMES:
        queue = topology.work_queue(name)
        assert queue.durable
        assert queue.queue_arguments == {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{name}.dlq"}
        assert topology.dead_letter_queue(name).name == f"{name}.dlq"
    with pytest.raises(ValueError, match="unknown queue"):
        topology.work_queue("fax")


def test_transport_options_per_broker() -> None:
    assert topology.transport_options("amqp://guest:guest@localhost//") == {"confirm_publish": True}
    assert topology.transport_options("redis://localhost:6379/0")["socket_timeout"] == 5.0
    fs = topology.transport_options("filesystem://", "/srv/broker")
    assert fs["data_folder_in"] == fs["data_folder_out"] == "/srv/broker/queue"
    assert fs["processed_folder"] == "/srv/broker/processed"
    with pytest.raises(ValueError, match="directory"):
        topology.transport_options("filesystem://")


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/vnd.api+json", True),
        ("text/plain", False),
        ("", False),
        ("application/x-www-form-urlencoded", False),
    ],
)
def test_json_content_types(content_type: str, ok: bool) -> None:
    assert _is_json_type(content_type) is ok


def task(body: object) -> TaskInput:
    return TaskInput(task_id=str(uuid.uuid4()), queue="email", body=body)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"subject": "Hi", "text": "x"},
        {"to": "not-an-address", "subject": "Hi", "text": "x"},
        {"to": ["a@example.com"], "text": "x"},
        {"to": "a@example.com", "subject": "Hi"},
        {"to": "a@example.com", "subject": "Hi\r\nBcc: evil@example.com", "text": "x"},
        {"to": ["a@example.com"] * 51, "subject": "Hi", "text": "x"},
    ],
)
def test_email_handler_refuses_invalid_payloads(body: object) -> None:
    with pytest.raises(InvalidPayload):
        email_handle(task(body))


@pytest.mark.parametrize(
    "body",
    [{"to": "+49151", "message": "x"}, {"to": "+4915112345678"}, {"to": "abc", "message": "x"}, "text"],
)
def test_sms_handler_refuses_invalid_payloads(body: object) -> None:
    with pytest.raises(InvalidPayload):
        sms_handle(task(body))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_callbacks_to_internal_addresses_are_refused_before_connecting(url: str) -> None:
    with pytest.raises(CallbackRefused):
        callback_send(url, b"{}", task_id="t1", secret=None, timeout_s=1)


def test_an_internal_address_is_allowed_when_configured() -> None:
    # Port 9 on loopback refuses the connection: the send is attempted, so it fails (retried), not refused.
    with pytest.raises(CallbackFailed):
        callback_send("http://127.0.0.1:9/hook", b"{}", task_id="t1", secret=None, timeout_s=1, allow_private=True)


def test_public_addresses_pass_the_check() -> None:
    refuse_internal_address("https://93.184.215.14/hook")  # a global address literal: no DNS needed
    refuse_internal_address("http://[2606:4700::1111]:8443/hook")
