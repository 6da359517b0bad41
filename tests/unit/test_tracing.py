"""Tracing's pure parts: W3C trace context, the span recorder, the OTLP encoder, setup from OTEL_*."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway_core import tracing
from gateway_core.tracing import otlp, w3c

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# --- W3C trace context ----------------------------------------------------------------------


def test_a_valid_traceparent_is_a_remote_parent() -> None:
    parent = w3c.parse_traceparent(VALID, "vendor=abc,other=1")

    assert parent is not None
    assert (parent.trace_id, parent.span_id) == (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7)
    assert parent.is_remote and parent.trace_flags.sampled
    assert list(parent.trace_state.items()) == [("vendor", "abc"), ("other", "1")]
    assert w3c.format_traceparent(parent) == VALID


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # version 00 has 4 fields
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(value: str | None) -> None:
    assert w3c.parse_traceparent(value) is None


def test_a_later_version_is_read_as_version_00() -> None:
    parent = w3c.parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-ever")

    assert parent is not None and parent.trace_flags == TraceFlags.SAMPLED  # unknown flag bits dropped


@pytest.mark.parametrize(
    "value",
    [
        VALID,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    ],
)
def test_traceparent_parsing_agrees_with_the_official_propagator(value: str) -> None:
    from opentelemetry import trace

    official = trace.get_current_span(TraceContextTextMapPropagator().extract({"traceparent": value}))
    official_context = official.get_span_context()
    ours = w3c.parse_traceparent(value)

    if not official_context.is_valid:
        assert ours is None
    else:
        assert ours is not None
        assert (ours.trace_id, ours.span_id, ours.trace_flags) == (
            official_context.trace_id,
            official_context.span_id,
            official_context.trace_flags,
        )


@pytest.mark.parametrize(
    ("value", "members"),
    [
        ("a=1", [("a", "1")]),
        ("a=1, ,b@vendor=x y", [("a", "1"), ("b@vendor", "x y")]),
        ("A=1", None),  # keys are lower case
        ("a=1,a=2", None),  # duplicate key
        ("a", None),
        (",".join(f"k{i}=v" for i in range(33)), None),  # more than 32 members
        ("a=" + "x" * 600, None),
    ],
)
def test_tracestate_is_kept_only_when_valid(value: str, members: list[tuple[str, str]] | None) -> None:
    state = w3c.parse_tracestate(value)

    assert (list(state.items()) if state is not None else None) == members


# --- Span recorder and setup ----------------------------------------------------------------


class Recorder:
    """Stands in for the batch processor: keeps what ended."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Tracing set up from OTEL_* (exporting nowhere), its processor swapped for a recorder."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gw-unit")
    monkeypatch.setattr(tracing, "_setup_pid", 0)
    assert tracing.setup() is True
    real = tracing._processor
    recorder = Recorder()
    monkeypatch.setattr(tracing, "_processor", recorder)
    yield recorder
    if real is not None:
        real.shutdown()
    monkeypatch.setattr(tracing, "ENABLED", False)
    monkeypatch.setattr(tracing, "_provider", None)


@pytest.mark.parametrize(
    "env",
    [{}, {"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}],
)
def test_tracing_is_off_unless_an_exporter_is_named(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(tracing, "_setup_pid", 0)

    assert tracing.setup() is False
    assert tracing.ENABLED is False
    assert tracing.current_trace_id() is None


def test_an_unknown_exporter_leaves_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    monkeypatch.setattr(tracing, "_setup_pid", 0)

    assert tracing.setup() is False


def test_a_child_span_continues_its_parent(traced: Recorder) -> None:
    remote = w3c.parse_traceparent(VALID, "vendor=abc")
    server = tracing.start_span("GET", SpanKind.SERVER, parent=remote, attributes={"http.request.method": "GET"})
    client = tracing.start_span("GET", SpanKind.CLIENT, parent=server)
    client.fail("upstream_timeout")
    client.end()
    client.end()  # at most once
    server.end()

    assert [s.name for s in traced.spans] == ["GET", "GET"]
    sent, received = traced.spans
    assert received.context.trace_id == remote.trace_id == sent.context.trace_id
    assert received.parent == remote
    assert sent.parent == server.context
    assert sent.attributes["error.type"] == "upstream_timeout"
    assert sent.status.status_code is StatusCode.ERROR
    assert client.traceparent() == f"00-{remote.trace_id:032x}-{client.context.span_id:016x}-01"
    assert client.tracestate() == "vendor=abc"
    assert received.resource.attributes["service.name"] == "gw-unit"
    assert sent.start_time <= sent.end_time


def test_an_unsampled_span_propagates_ids_and_records_nothing(
    traced: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    unsampled = w3c.parse_traceparent(VALID[:-2] + "00")
    span = tracing.start_span("GET", SpanKind.SERVER, parent=unsampled)
    child = tracing.start_span("GET", SpanKind.CLIENT, parent=span)
    child.end()
    span.end()

    assert traced.spans == []
    assert child.traceparent().endswith("-00")
    assert child.context.trace_id == unsampled.trace_id


def test_the_current_span_names_the_access_logs_trace_id(traced: Recorder) -> None:
    span = tracing.start_span("GET", SpanKind.SERVER)
    tracing.activate(span)
    try:
        assert tracing.current_trace_id() == f"{span.context.trace_id:032x}"
    finally:
        tracing.activate(None)


def test_sdk_messages_are_let_through_once_per_interval() -> None:
    once = tracing._OncePerInterval(interval_s=60)
    record = logging.LogRecord(
        "opentelemetry.x", logging.WARNING, __file__, 1, "Queue full, dropping %s.", ("s",), None
    )

    assert [once.filter(record) for _ in range(3)] == [True, False, False]


# --- OTLP encoding --------------------------------------------------------------------------


RESOURCE = Resource.create({"service.name": "gw", "deployment.environment": "test"})
SCOPE = InstrumentationScope("api-gateway", "1")


def _readable(**overrides: object) -> ReadableSpan:
    values: dict[str, object] = {
        "name": "GET /api/v1/orders",
        "context": SpanContext(0xABC, 0x123, is_remote=False, trace_flags=TraceFlags(1)),
        "parent": SpanContext(0xABC, 0x99, is_remote=True, trace_flags=TraceFlags(1)),
        "resource": RESOURCE,
        "attributes": {"http.request.method": "GET", "http.response.status_code": 200, "ok": True, "ratio": 0.5},
        "kind": SpanKind.SERVER,
        "status": Status(StatusCode.UNSET),
        "start_time": 1_700_000_000_000_000_000,
        "end_time": 1_700_000_000_001_000_000,
        "instrumentation_scope": SCOPE,
    }
    values.update(overrides)
    return ReadableSpan(**values)  # type: ignore[arg-type]  # keyword values built above


def test_the_fast_encoder_writes_what_the_official_encoder_writes() -> None:
    """Same message, field for field (a process's spans share one resource and scope object)."""
    scope = InstrumentationScope("other-scope", "2")
    other_resource = Resource.create({"service.name": "worker"})
    spans = [
        _readable(),
        _readable(name="send sms", kind=SpanKind.PRODUCER, parent=None, instrumentation_scope=scope),
        _readable(
            kind=SpanKind.CLIENT,
            status=Status(StatusCode.ERROR, "refused"),
            attributes={"error.type": "upstream_unavailable", "server.port": 8080, "negative": -5, "empty": ""},
            context=SpanContext(
                0xABC, 0x7, is_remote=False, trace_flags=TraceFlags(1), trace_state=TraceState([("a", "1")])
            ),
        ),
        _readable(kind=SpanKind.CONSUMER, resource=other_resource, attributes={"list": ["a", "b"], "ints": [1, 2]}),
        _readable(kind=SpanKind.INTERNAL, attributes={}, status=Status(StatusCode.OK), instrumentation_scope=None),
    ]

    ours = ExportTraceServiceRequest.FromString(otlp.ExportRequestEncoder().encode(spans))
    official = ExportTraceServiceRequest.FromString(encode_spans(spans).SerializeToString())

    assert ours == official
    assert len(ours.resource_spans) == 2


def test_the_encoder_remembers_no_stale_resource() -> None:
    encoder = otlp.ExportRequestEncoder()
    for name in ("first", "second"):
        span = _readable(resource=Resource.create({"service.name": name}))
        decoded = ExportTraceServiceRequest.FromString(encoder.encode([span]))
        attributes = {kv.key: kv.value.string_value for kv in decoded.resource_spans[0].resource.attributes}
        assert attributes["service.name"] == name
