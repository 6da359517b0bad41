"""Tracing's pure parts: W3C trace context, the span recorder, the OTLP encoder, setup from OTEL_*."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway_core import tracing
from gateway_core.tracing import batch, otlp, w3c

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
        self.spans: list[tracing.Span] = []

    def on_end(self, span: tracing.Span) -> None:
        self.spans.append(span)

    def discard(self) -> None:
        self.spans.clear()


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Tracing set up from OTEL_* (exporting nowhere), its processor swapped for a recorder."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gw-unit")
    for name in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracing, "_setup_pid", 0)
    monkeypatch.setattr(tracing, "_processor", None)
    assert tracing.setup() is True
    real = tracing._processor
    recorder = Recorder()
    monkeypatch.setattr(tracing, "_processor", recorder)
    yield recorder
    if real is not None:
        real.shutdown(0)
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
    sent, received = (span.readable() for span in traced.spans)
    assert received.context.trace_id == remote.trace_id == sent.context.trace_id
    assert received.parent == remote
    assert sent.parent == server.context
    assert sent.attributes["error.type"] == "upstream_timeout"
    assert sent.status.status_code is StatusCode.ERROR
    assert received.attributes == {"http.request.method": "GET"}
    assert client.traceparent() == f"00-{remote.trace_id:032x}-{client.context.span_id:016x}-01"
    assert client.tracestate() == "vendor=abc"
    assert received.resource.attributes["service.name"] == "gw-unit"
    assert sent.start_time <= sent.end_time
    assert received.start_time <= sent.start_time and sent.end_time <= received.end_time


def test_an_unsampled_span_propagates_ids_and_records_nothing(traced: Recorder) -> None:
    unsampled = w3c.parse_traceparent(VALID[:-2] + "00")
    span = tracing.start_span("GET", SpanKind.SERVER, parent=unsampled, attributes={"http.request.method": "GET"})
    child = tracing.start_span("GET", SpanKind.CLIENT, parent=span)
    child.attributes["http.response.status_code"] = 200  # dropped: nothing is recorded
    child.attributes.update({"url.full": "http://upstream"})
    child.attributes |= {"server.port": 80}
    child.attributes.setdefault("server.address", "upstream")
    child.fail("upstream_timeout")
    child.end()
    span.end()

    assert traced.spans == []
    assert child.traceparent().endswith("-00") and span.traceparent().endswith("-00")
    assert child.context.trace_id == unsampled.trace_id
    assert dict(span.attributes) == {} and dict(child.attributes) == {}
    assert not child.sampled and not child.recording


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


def test_the_fast_encoder_writes_the_gateways_records_as_the_official_encoder_writes_them(traced: Recorder) -> None:
    """The records the request path makes, encoded directly, against the official encoding of their ReadableSpan."""
    remote = w3c.parse_traceparent(VALID, "vendor=abc,other=1")
    server = tracing.start_span("GET /api/v1/orders", SpanKind.SERVER, parent=remote)
    server.attributes.update({"http.request.method": "GET", "http.response.status_code": 503, "gateway.fallback": True})
    server.attributes.update({"gateway.service": "bestellungen-ü", "gateway.request.id": "r" * 40, "url.path": ""})
    client = tracing.start_span("GET", SpanKind.CLIENT, parent=server, attributes={"server.port": 8080, "r": 0.25})
    client.fail("upstream_timeout")
    client.end()
    server.fail("503")
    server.end()
    root = tracing.start_span("publish sms ✓", SpanKind.PRODUCER, attributes={"list": ["a", "b"], "n": -5})
    root.end()
    unnamed = tracing.start_span("", SpanKind.INTERNAL, parent=root, attributes={"x" * 200: "y" * 300})
    unnamed.end()
    records = traced.spans
    assert len(records) == 4
    resource = Resource.create({"service.name": "gw"})

    ours = ExportTraceServiceRequest.FromString(otlp.ExportRequestEncoder(resource, SCOPE).encode(records))
    official_spans = [span.readable(resource) for span in records]
    for span in official_spans:
        span._instrumentation_scope = SCOPE
    official = ExportTraceServiceRequest.FromString(encode_spans(official_spans).SerializeToString())

    assert ours == official
    [scope_spans] = ours.resource_spans[0].scope_spans
    assert [span.name for span in scope_spans.spans] == ["GET", "GET /api/v1/orders", "publish sms ✓", ""]


def test_records_and_readable_spans_share_one_request() -> None:
    record = tracing.Span("GET", SpanKind.CLIENT, 0xABC, 0x5, True, TraceState(), None, {"a": "b"})
    record.end_ns = record.start_ns + 10
    spans = [_readable(), record, _readable(resource=RESOURCE, name="second")]

    ours = ExportTraceServiceRequest.FromString(otlp.ExportRequestEncoder(RESOURCE, SCOPE).encode(spans))
    official = ExportTraceServiceRequest.FromString(
        encode_spans([_readable(), record.readable(RESOURCE), _readable(name="second")]).SerializeToString()
    )

    assert ours == official


# --- Sampling decided without the SDK sampler -----------------------------------------------


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Recorder]]:
    """Return ``configure(sampler, arg)``: tracing set up with that OTEL_TRACES_SAMPLER, spans recorded."""
    reals: list[object] = []

    def configure(sampler: str | None, arg: str | None = None) -> Recorder:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        for name, value in (("OTEL_TRACES_SAMPLER", sampler), ("OTEL_TRACES_SAMPLER_ARG", arg)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        monkeypatch.setattr(tracing, "_setup_pid", 0)
        monkeypatch.setattr(tracing, "_processor", None)
        assert tracing.setup() is True
        reals.append(tracing._processor)
        recorder = Recorder()
        monkeypatch.setattr(tracing, "_processor", recorder)
        return recorder

    yield configure
    for real in reals:
        real.shutdown(0)  # type: ignore[attr-defined]  # a BatchProcessor
    monkeypatch.setattr(tracing, "ENABLED", False)
    monkeypatch.setattr(tracing, "_provider", None)


SAMPLERS = [
    (None, None),  # parentbased_always_on
    ("parentbased_always_on", None),
    ("parentbased_always_off", None),
    ("always_on", None),
    ("always_off", None),
    ("traceidratio", "0.25"),
    ("traceidratio", "not-a-ratio"),  # the SDK's default: 1.0
    ("parentbased_traceidratio", "0.01"),
    ("parentbased_traceidratio", "0.5"),
    ("parentbased_traceidratio", "1.0"),
    ("parentbased_traceidratio", "0"),
    ("unknown_sampler", None),  # the SDK's default: parentbased_always_on
]


def _trace_ids(bound: int | None) -> list[int]:
    rng = random.Random(16)
    ids = [rng.getrandbits(128) or 1 for _ in range(2000)]
    high = rng.getrandbits(64) << 64
    ids += [1, (1 << 128) - 1, high, high | ((1 << 64) - 1)]
    if bound is not None and 0 < bound < 1 << 64:
        ids += [high | (bound - 1), high | bound, high | (bound + 1), bound - 1, bound]  # either side of the bound
    return ids


@pytest.mark.parametrize(("sampler", "arg"), SAMPLERS)
def test_the_sampling_decision_is_the_sdk_samplers_for_the_same_trace_id(
    configure: Callable[..., Recorder], monkeypatch: pytest.MonkeyPatch, sampler: str | None, arg: str | None
) -> None:
    """New traces and remote parents (sampled or not, with a tracestate) decide as the SDK sampler does."""
    configure(sampler, arg)
    sdk = TracerProvider().sampler  # what the same variables select
    assert tracing._sampler is None  # a standard sampler: decided without asking it
    root = getattr(sdk, "_root", sdk)
    bound = getattr(root, "bound", None)
    state = TraceState([("vendor", "abc")])
    decisions = {True: 0, False: 0}
    for trace_id in _trace_ids(bound):
        monkeypatch.setattr(tracing, "_new_trace_id", lambda trace_id=trace_id: trace_id)
        span = tracing.start_span("GET", SpanKind.SERVER)
        expected = sdk.should_sample(None, trace_id, "GET", SpanKind.SERVER)
        assert span.sampled is (expected.decision is Decision.RECORD_AND_SAMPLE), hex(trace_id)
        assert span.trace_int == trace_id and span.trace_state == TraceState()
        decisions[span.sampled] += 1
        server = tracing.start_server_span("GET", None, None)  # the request path's own way in
        assert (server.sampled, server.trace_int, server.kind) == (span.sampled, trace_id, SpanKind.SERVER)
        assert tracing.current_span() is server
        for flags in (TraceFlags.DEFAULT, TraceFlags.SAMPLED):
            remote = SpanContext(trace_id, 0x42, is_remote=True, trace_flags=TraceFlags(flags), trace_state=state)
            span = tracing.start_span("GET", SpanKind.SERVER, parent=remote)
            context = set_span_in_context(NonRecordingSpan(remote))
            expected = sdk.should_sample(context, trace_id, "GET", SpanKind.SERVER)
            assert span.sampled is (expected.decision is Decision.RECORD_AND_SAMPLE), (hex(trace_id), flags)
            assert span.trace_state == expected.trace_state == state
            child = tracing.start_span("GET", SpanKind.CLIENT, parent=span)
            assert child.sampled is span.sampled  # a local parent's decision is kept
            header = f"00-{trace_id:032x}-{0x42:016x}-0{int(flags)}"
            server = tracing.start_server_span("GET", header, "vendor=abc")
            assert (server.sampled, server.trace_int, server.trace_state) == (span.sampled, trace_id, state)
            assert server.parent_context == remote
    if bound is not None and 0 < bound < 1 << 64 and root.rate >= 0.25:
        assert decisions[True] and decisions[False]  # the ratio did split the ids


def test_the_server_span_starts_a_new_trace_unless_the_traceparent_is_valid(traced: Recorder) -> None:
    continued = tracing.start_server_span("GET", VALID, "vendor=abc")
    assert (continued.trace_id, continued.parent.span_id) == (VALID[3:35], 0x00F067AA0BA902B7)
    assert continued.sampled and continued.tracestate() == "vendor=abc"
    for header in ("", "00-not-a-trace-01", VALID.upper()):
        fresh = tracing.start_server_span("GET", header, "vendor=abc")
        assert fresh.parent is None and fresh.trace_id != VALID[3:35] and fresh.tracestate() == ""
        assert tracing.current_span() is fresh
    tracing.activate(None)


def test_a_sampler_without_a_fast_equivalent_is_asked(configure: Callable[..., Recorder]) -> None:
    configure("parentbased_always_on")

    class PostsOnly(Sampler):
        def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None):  # type: ignore[no-untyped-def]
            decision = Decision.RECORD_AND_SAMPLE if name.startswith("POST") else Decision.DROP
            return SamplingResult(decision, None, TraceState([("asked", "1")]))

        def get_description(self) -> str:
            return "PostsOnly"

    for sampler in (PostsOnly(), ParentBased(PostsOnly()), ParentBased(ALWAYS_ON, remote_parent_sampled=PostsOnly())):
        compiled = tracing._compile_sampler(sampler)
        assert compiled[2] is sampler
    tracing._root_bound, tracing._parent_based, tracing._sampler = tracing._compile_sampler(PostsOnly())
    remote = w3c.parse_traceparent(VALID)

    post, get = tracing.start_span("POST", SpanKind.SERVER), tracing.start_span("GET", SpanKind.SERVER, parent=remote)

    assert post.sampled and not get.sampled  # the remote parent was sampled: PostsOnly said no
    assert post.trace_state == TraceState([("asked", "1")])
    assert tracing.start_span("GET", SpanKind.CLIENT, parent=post).sampled  # local parents: the parent's decision


def test_new_trace_ids_are_random_and_valid(configure: Callable[..., Recorder]) -> None:
    configure("always_on")
    spans = [tracing.start_span("GET", SpanKind.SERVER) for _ in range(200)]

    assert len({span.trace_int for span in spans}) == len({span.span_id for span in spans}) == 200
    assert all(0 < span.trace_int < 1 << 128 and 0 < span.span_id < 1 << 64 for span in spans)
    assert all(span.context.is_valid for span in spans)
    assert any(span.trace_int >= 1 << 64 for span in spans)  # all 128 bits


# --- The batch processor --------------------------------------------------------------------


class Collecting:
    """An exporter that keeps the batches it gets (and can be made to fail)."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[object]] = []
        self.fail = fail
        self.shut = False

    def export(self, spans: list[object]) -> None:
        self.batches.append(list(spans))
        if self.fail:
            raise ConnectionError("collector down")

    def shutdown(self) -> None:
        self.shut = True


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_full_batch_is_exported_without_waiting_for_the_delay() -> None:
    exporter = Collecting()
    processor = batch.BatchProcessor(exporter, schedule_delay_ms=60_000, max_queue_size=100, max_export_batch_size=4)
    try:
        for item in range(10):
            processor.on_end(item)
        _wait_for(lambda: len(exporter.batches) == 2)
        assert exporter.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]  # oldest first; 8 and 9 wait for the delay
        processor.force_flush()
        assert exporter.batches[-1] == [8, 9]
    finally:
        processor.shutdown(1.0)
    assert exporter.shut


def test_the_delay_exports_a_partial_batch_and_shutdown_exports_the_rest() -> None:
    exporter = Collecting()
    processor = batch.BatchProcessor(exporter, schedule_delay_ms=20, max_queue_size=100, max_export_batch_size=50)
    processor.on_end("a")
    _wait_for(lambda: exporter.batches == [["a"]])
    processor.on_end("b")
    processor.shutdown(1.0)
    assert exporter.batches == [["a"], ["b"]] and exporter.shut
    processor.on_end("late")  # after shutdown: queued, never exported, no error
    assert processor.force_flush() is False


def test_a_full_queue_drops_new_spans_while_an_export_hangs() -> None:
    gate, exporting = threading.Event(), threading.Event()

    class Hanging(Collecting):
        def export(self, spans: list[object]) -> None:
            super().export(spans)
            exporting.set()
            gate.wait(5)

    exporter = Hanging()
    processor = batch.BatchProcessor(exporter, schedule_delay_ms=60_000, max_queue_size=3, max_export_batch_size=8)
    try:
        for item in range(3):
            processor.on_end(item)  # the batch size is clamped to the queue's: 3 wake the thread
        assert exporting.wait(5)  # ... which now hangs in its export
        for item in range(3, 8):
            processor.on_end(item)  # 3 more fill the queue again, the last 2 are dropped
        assert processor.dropped == 2
        gate.set()
        _wait_for(lambda: len(exporter.batches) == 2)
        assert exporter.batches == [[0, 1, 2], [3, 4, 5]]
    finally:
        gate.set()
        processor.shutdown(1.0)


def test_a_failing_exporter_does_not_stop_the_thread(caplog: pytest.LogCaptureFixture) -> None:
    exporter = Collecting(fail=True)
    processor = batch.BatchProcessor(exporter, schedule_delay_ms=60_000, max_queue_size=10, max_export_batch_size=2)
    try:
        for item in range(2):
            processor.on_end(item)
        _wait_for(lambda: len(exporter.batches) == 1)
        for item in range(2, 4):
            processor.on_end(item)
        _wait_for(lambda: len(exporter.batches) == 2)
    finally:
        processor.shutdown(1.0)
    assert exporter.batches == [[0, 1], [2, 3]]
    assert any("span export failed: ConnectionError" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (5.0, 2048, 512)),
        (
            {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16"},
            (0.05, 64, 16),
        ),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "8", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16"}, (5.0, 8, 8)),  # clamped
        ({"OTEL_BSP_SCHEDULE_DELAY": "soon", "OTEL_BSP_MAX_QUEUE_SIZE": "-1"}, (5.0, 2048, 512)),  # defaults
    ],
)
def test_the_batch_processor_reads_the_otel_bsp_variables(
    env: dict[str, str], expected: tuple[float, int, int]
) -> None:
    processor = batch.BatchProcessor.from_env(Collecting(), env)
    try:
        assert (processor._delay_s, processor._max_queue, processor._batch) == expected
    finally:
        processor.shutdown(1.0)


def test_the_console_exporter_gets_readable_spans(configure: Callable[..., Recorder], monkeypatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setattr(tracing, "_setup_pid", 0)
    assert tracing.setup() is True
    exporter = tracing._processor.exporter  # type: ignore[union-attr]
    printed: list[object] = []
    monkeypatch.setattr(exporter._exporter, "export", printed.extend)
    span = tracing.start_span("GET", SpanKind.SERVER, attributes={"http.request.method": "GET"})
    span.end()
    tracing.force_flush()
    tracing.shutdown(1.0)

    [readable] = printed
    assert isinstance(readable, ReadableSpan)
    assert readable.attributes == {"http.request.method": "GET"} and readable.resource is tracing._resource
