"""Traces through live processes: gunicorn gateways and Celery workers export to a real OTLP/HTTP receiver.

The receiver (tests/support/otlp.py) decodes what it gets with the official proto
messages, so each test asserts on the spans a collector would store: names, kinds,
parents, trace ids and attributes, and on the ``traceparent`` the upstream or callback
receiver was sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import requests

from tests.integration.test_queue_fixtures import (  # noqa: F401 - fixtures
    HANDLERS,
    Broker,
    default_broker_fixture,
    wait_for_task,
    worker_fixture,
)
from tests.support.builders import make_app, make_key, make_service
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


def only(spans: list[ReceivedSpan], kind: str, name: str | None = None) -> ReceivedSpan:
    """Return the one span of ``kind`` (and ``name``), failing with the spans when there is not exactly one."""
    found = [s for s in spans if s.kind == kind and (name is None or s.name == name)]
    assert len(found) == 1, f"expected one {kind} span {name or ''}, got {spans}"
    return found[0]


def assert_no_secret(spans: list[ReceivedSpan], *secrets: str) -> None:
    text = json.dumps([span.attributes for span in spans]) + " ".join(span.name for span in spans)
    for secret in secrets:
        assert secret not in text


def test_a_queued_task_is_one_trace_from_the_request_to_the_worker_and_its_callback(
    gateway_server, default_broker: Broker, worker, otlp: OtlpReceiver, echo_upstream: EchoUpstream
) -> None:
    make_service("notify", "queue://sms")
    app = make_app("acme", entries=[{"path": "/api/v1/notify/*", "methods": ["POST"]}])
    _, key = make_key(app)
    gw = gateway_server(env={**default_broker.env(), **otlp.env()})
    w = worker(default_broker, env={"GATEWAY_QUEUE_HANDLERS": f"sms={HANDLERS}.record", **otlp.env()}, queues="sms")

    accepted = requests.post(
        gw.url + "/api/v1/notify/send?token=query-secret",
        json={"to": "+4915112345678", "message": "body-secret"},
        headers={
            "X-API-Key": key,
            "traceparent": CLIENT_TRACEPARENT,
            "tracestate": "vendor=abc",
            "X-Callback-URL": echo_upstream.url + "/hooks/done?sig=callback-secret",
        },
        timeout=15,
    )
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    task = wait_for_task(task_id, {"succeeded", "failed"}, log=w.log)
    assert task.status == "succeeded"

    spans = otlp.wait_for(lambda got: {"server", "producer", "consumer", "client"} <= {s.kind for s in got})
    assert {s.trace_id for s in spans} == {CLIENT_TRACE}  # the client's trace, continued throughout
    server = only(spans, "server")
    producer = only(spans, "producer", "publish sms")
    consumer = only(spans, "consumer", "process sms")
    callback = only(spans, "client", "POST")
    assert server.parent_span_id == CLIENT_SPAN
    assert producer.parent_span_id == server.span_id
    assert consumer.parent_span_id == producer.span_id
    assert callback.parent_span_id == consumer.span_id
    assert (server.service_name, producer.service_name) == ("api-gateway", "api-gateway")
    assert (consumer.service_name, callback.service_name) == ("api-gateway-worker", "api-gateway-worker")

    assert server.name == "POST /api/v1/notify"
    assert server.attributes["http.route"] == "/api/v1/notify"
    assert server.attributes["http.response.status_code"] == 202
    assert server.attributes["gateway.application.id"] == str(app.id)
    assert producer.attributes["messaging.destination.name"] == "sms"
    assert producer.attributes["messaging.message.id"] == task_id
    assert producer.attributes["messaging.system"] == consumer.attributes["messaging.system"]
    assert producer.attributes["messaging.system"] in ("rabbitmq", "redis", "sqlite", "filesystem")
    assert consumer.attributes["messaging.message.id"] == task_id
    assert consumer.attributes["messaging.operation.type"] == "process"
    assert callback.attributes["url.full"] == echo_upstream.url + "/hooks/done"
    assert callback.attributes["http.response.status_code"] == 200

    # The handler saw the producer span as its parent; the callback receiver, the callback span.
    assert task.result["headers"]["traceparent"] == f"00-{CLIENT_TRACE}-{producer.span_id}-01"
    assert task.result["headers"]["tracestate"] == "vendor=abc"
    [delivered] = [r for r in echo_upstream.received if r.target.startswith("/hooks/done")]
    assert delivered.header("traceparent") == f"00-{CLIENT_TRACE}-{callback.span_id}-01"
    assert_no_secret(spans, key, "query-secret", "body-secret", "callback-secret")


# --- The request path ---------------------------------------------------------------------------


@pytest.fixture
def orders(echo_upstream: EchoUpstream) -> dict[str, object]:
    """``/api/v1/orders`` -> the echo upstream (version v1), and an application with a key for it."""
    make_service("orders", echo_upstream.url, versions=[("v1", echo_upstream.url)])
    app = make_app("acme", entries=[{"path": "/api/v1/orders/*"}])
    _, key = make_key(app)
    return {"app": app, "key": key}


def access_trace_ids(log: str) -> list[object]:
    """Return the ``trace_id`` of every access-log line in a gunicorn log."""
    return [record.get("trace_id") for record in _json_lines(log) if "bytes_sent" in record]


def _json_lines(log: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_a_proxied_request_continues_the_clients_trace_and_the_upstream_gets_the_gateways_traceparent(
    gateway_server, otlp: OtlpReceiver, echo_upstream: EchoUpstream, orders: dict[str, object]
) -> None:
    gw = gateway_server(env=otlp.env())

    response = requests.get(
        gw.url + "/api/v1/orders/42?api_key=query-secret",
        headers={"X-API-Key": orders["key"], "traceparent": CLIENT_TRACEPARENT, "tracestate": "vendor=abc"},
        timeout=10,
    )
    assert response.status_code == 200, response.text

    spans = otlp.wait_for(lambda got: {"server", "client"} <= {s.kind for s in got})
    server, client = only(spans, "server"), only(spans, "client")
    assert (server.trace_id, server.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert (client.trace_id, client.parent_span_id) == (CLIENT_TRACE, server.span_id)
    assert server.name == "GET /api/v1/orders"
    assert server.attributes["http.route"] == "/api/v1/orders"
    assert server.attributes["url.path"] == "/api/v1/orders/42"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gateway.service"] == "orders"
    assert server.attributes["gateway.service.version"] == "v1"
    assert server.attributes["gateway.application.id"] == str(orders["app"].id)
    assert server.attributes["gateway.request.id"] == response.headers["X-Request-ID"]
    assert "error.type" not in server.attributes and server.status == "unset"
    assert client.name == "GET"
    assert client.attributes["url.full"] == echo_upstream.url + "/api/v1/orders/42"
    assert client.attributes["http.response.status_code"] == 200
    assert server.start_ns <= client.start_ns <= client.end_ns <= server.end_ns

    # The upstream saw the gateway's client span as the parent, once; the client's state is kept.
    received = echo_upstream.last
    assert [v for k, v in received.headers if k.lower() == "traceparent"] == [f"00-{CLIENT_TRACE}-{client.span_id}-01"]
    assert received.header("tracestate") == "vendor=abc"
    assert access_trace_ids(gw.log()) == [CLIENT_TRACE]
    assert_no_secret(spans, orders["key"], "query-secret")


def test_each_fallback_attempt_is_its_own_client_span(
    gateway_server, otlp: OtlpReceiver, echo_upstream: EchoUpstream
) -> None:
    from tests.support.upstream import closed_port_url

    down = closed_port_url()
    make_service("orders", down, fallback_url=echo_upstream.url)
    app = make_app("acme", entries=[{"path": "/api/v1/orders/*"}])
    _, key = make_key(app)
    gw = gateway_server(env=otlp.env())

    response = requests.get(gw.url + "/api/v1/orders/7", headers={"X-API-Key": key}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["X-Gateway-Fallback"] == "1"

    spans = otlp.wait_for(lambda got: len([s for s in got if s.kind == "client"]) == 2 and len(got) == 3)
    server = only(spans, "server")
    first, second = sorted((s for s in spans if s.kind == "client"), key=lambda s: s.start_ns)
    assert server.parent_span_id == ""  # no traceparent sent: a new trace
    assert {first.parent_span_id, second.parent_span_id} == {server.span_id}
    assert first.attributes["url.full"] == down + "/api/v1/orders/7"
    assert first.attributes["error.type"] == "upstream_unavailable" and first.status == "error"
    assert "http.response.status_code" not in first.attributes
    assert second.attributes["url.full"] == echo_upstream.url + "/api/v1/orders/7"
    assert second.attributes["gateway.fallback"] is True
    assert second.attributes["http.response.status_code"] == 200
    assert server.attributes["gateway.fallback"] is True
    assert server.attributes["http.response.status_code"] == 200
    assert echo_upstream.last.header("traceparent") == f"00-{server.trace_id}-{second.span_id}-01"


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        ("/api/v1/orders/1", {}, 401, "missing_api_key"),
        ("/api/v1/orders/1", {"X-API-Key": "gk_nope.not-a-real-secret"}, 401, "invalid_api_key"),
        ("/api/v1/nowhere", {}, 404, "route_not_found"),
    ],
)
def test_a_request_the_gateway_answers_itself_is_a_server_span_with_its_error_code(
    gateway_server,
    otlp: OtlpReceiver,
    echo_upstream: EchoUpstream,
    orders: dict[str, object],
    path: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    gw = gateway_server(env=otlp.env())

    # A malformed traceparent is not continued: the gateway starts a new trace.
    sent = {**headers, "traceparent": "00-not-a-trace-01"}
    response = requests.get(gw.url + path, headers=sent, timeout=10)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code

    [server] = otlp.wait_for(lambda got: len(got) >= 1)
    assert server.kind == "server" and server.parent_span_id == ""
    assert server.attributes["http.response.status_code"] == status
    assert server.attributes["error.type"] == code
    assert server.attributes["gateway.error.code"] == code
    assert server.status == "unset"  # a 4xx is the client's error, not the server's
    assert echo_upstream.received == []
    assert access_trace_ids(gw.log()) == [server.trace_id]
    assert_no_secret([server], "not-a-real-secret")


def test_with_tracing_off_nothing_is_exported_and_the_clients_traceparent_passes_unchanged(
    gateway_server, otlp: OtlpReceiver, echo_upstream: EchoUpstream, orders: dict[str, object]
) -> None:
    env = {key: value for key, value in otlp.env().items() if key != "OTEL_TRACES_EXPORTER"}  # off by default
    gw = gateway_server(env=env)

    response = requests.get(
        gw.url + "/api/v1/orders/1", headers={"X-API-Key": orders["key"], "traceparent": CLIENT_TRACEPARENT}, timeout=10
    )
    assert response.status_code == 200

    assert echo_upstream.last.header("traceparent") == CLIENT_TRACEPARENT
    assert access_trace_ids(gw.log()) == [None]
    time.sleep(0.5)  # five export intervals: nothing may arrive
    assert otlp.requests == 0


def test_an_unsampled_request_sends_the_upstream_the_server_spans_id_and_exports_nothing(
    gateway_server, otlp: OtlpReceiver, echo_upstream: EchoUpstream, orders: dict[str, object]
) -> None:
    """1 % sampling's common case: no span recorded, the upstream still gets the gateway's traceparent (flags 00)."""
    gw = gateway_server(env=otlp.env(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0"))
    headers = {"X-API-Key": orders["key"]}

    new = requests.get(gw.url + "/api/v1/orders/1", headers=headers, timeout=10)
    sent_new = echo_upstream.last.header("traceparent")
    unsampled = requests.get(
        gw.url + "/api/v1/orders/2",
        headers={**headers, "traceparent": CLIENT_TRACEPARENT[:-2] + "00", "tracestate": "vendor=abc"},
        timeout=10,
    )
    sent_unsampled, state_unsampled = echo_upstream.last.header("traceparent"), echo_upstream.last.header("tracestate")
    sampled = requests.get(  # parent-based: a sampled parent is sampled whatever the ratio
        gw.url + "/api/v1/orders/3", headers={**headers, "traceparent": CLIENT_TRACEPARENT}, timeout=10
    )
    sent_sampled = echo_upstream.last.header("traceparent")
    assert [r.status_code for r in (new, unsampled, sampled)] == [200, 200, 200]

    version, trace_id, parent_id, flags = sent_new.split("-")
    assert (version, len(trace_id), len(parent_id), flags) == ("00", 32, 16, "00")
    assert int(trace_id, 16) and int(parent_id, 16)
    assert sent_unsampled.startswith(f"00-{CLIENT_TRACE}-") and sent_unsampled.endswith("-00")
    assert sent_unsampled.split("-")[2] != CLIENT_SPAN  # the gateway's own span id, never the client's
    assert state_unsampled == "vendor=abc"
    assert access_trace_ids(gw.log()) == [trace_id, CLIENT_TRACE, CLIENT_TRACE]

    spans = otlp.wait_for(lambda got: {"server", "client"} <= {s.kind for s in got})
    time.sleep(0.3)  # three export intervals: anything else would have arrived
    server, client = only(otlp.spans, "server"), only(otlp.spans, "client")
    assert len(otlp.spans) == 2, spans
    assert server.attributes["url.path"] == "/api/v1/orders/3" and server.parent_span_id == CLIENT_SPAN
    assert sent_sampled == f"00-{CLIENT_TRACE}-{client.span_id}-01"


@pytest.mark.parametrize("collector", ["refusing", "hanging"])
def test_a_collector_that_is_down_costs_the_request_path_nothing(
    gateway_server, echo_upstream: EchoUpstream, orders: dict[str, object], collector: str
) -> None:
    """Exports fail or hang in the batch processor's own greenlet; requests do not wait, logs stay quiet."""
    from tests.support.upstream import closed_port_url

    hanging = OtlpReceiver(hang=True) if collector == "hanging" else None
    endpoint = hanging.endpoint if hanging is not None else closed_port_url()
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TIMEOUT": "30",  # a hanging export would hold a request 30 s
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_BSP_MAX_QUEUE_SIZE": "64",  # full after a few dozen requests: spans are dropped
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
    }
    try:
        traced = gateway_server(env=env)
        plain = gateway_server()
        headers = {"X-API-Key": orders["key"]}
        timings: dict[str, list[float]] = {"traced": [], "plain": []}
        with requests.Session() as session:
            for _ in range(150):
                for name, gw in (("traced", traced), ("plain", plain)):
                    started = time.perf_counter()
                    response = session.get(gw.url + "/api/v1/orders/1", headers=headers, timeout=10)
                    timings[name].append(time.perf_counter() - started)
                    assert response.status_code == 200
        if hanging is not None:
            assert hanging.requests >= 1  # the exporter did try, and its export is still hanging
    finally:
        if hanging is not None:
            hanging.close()

    # An export on the request path would hold requests 30 s (hanging) or its 1 s, 2 s ... retry
    # backoff (refused) once per 16 spans; measured against a gateway without tracing in
    # turn, so a loaded machine slows both alike. The first requests (key check) are warm-up.
    traced_s, plain_s = sum(timings["traced"][5:]), sum(timings["plain"][5:])
    assert traced_s < 2 * plain_s + 2.0, (traced_s, plain_s)
    sdk_lines = [line for line in traced.log().splitlines() if "opentelemetry" in line or "Queue full" in line]
    assert len(sdk_lines) <= 4, sdk_lines  # not a line per dropped span
