"""Distributed tracing: OpenTelemetry spans of the gateway and its workers, exported over OTLP/HTTP.

Off by default. Configured only by the standard variables, read once per process by
:func:`setup` (the gateway calls it in each gunicorn worker, the Celery worker in each
pool process):

- ``OTEL_TRACES_EXPORTER``: ``otlp`` turns tracing on (OTLP/HTTP protobuf),
  ``console`` prints spans (development); unset or ``none``: off. ``OTEL_SDK_DISABLED=true``
  also turns it off.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``http://localhost:4318``; spans go to ``/v1/traces``)
  or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is); ``OTEL_EXPORTER_OTLP_HEADERS``
  (a collector's token may come from ``OTEL_EXPORTER_OTLP_HEADERS_FILE`` instead),
  ``OTEL_EXPORTER_OTLP_TIMEOUT`` (10 s), ``OTEL_EXPORTER_OTLP_COMPRESSION``.
- ``OTEL_SERVICE_NAME`` (``api-gateway``; ``api-gateway-worker`` for workers),
  ``OTEL_RESOURCE_ATTRIBUTES``.
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (``parentbased_always_on``).
- ``OTEL_BSP_SCHEDULE_DELAY`` (5000 ms), ``OTEL_BSP_MAX_QUEUE_SIZE`` (2048),
  ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512): the batch processor (:mod:`.batch`), which
  exports from its own thread (a greenlet under gevent), never on the request path; a
  full queue drops spans.

The request path's only cost while tracing is off is reading :data:`ENABLED`. Spans
are recorded by :class:`Span`, a small recorder of plain values: the SDK's own
``Tracer.start_span`` (attribute validation, locks, a ``ReadableSpan`` copy at the end)
costs 30-40 µs a span on the reference machine, several times this. An ended span
goes to the batch processor as it is; the OTLP encoder (:mod:`.otlp`) reads it there,
and other exporters get an SDK ``ReadableSpan`` made in the export thread.

Sampling follows the SDK sampler that ``OTEL_TRACES_SAMPLER`` selects. The standard
ones (``always_on``, ``always_off``, ``traceidratio`` and their ``parentbased_``
forms) are decided here without asking it, with the same result: a remote parent's
sampled flag for the parent-based ones, otherwise the low 64 bits of the trace id
below the ratio's bound, as ``TraceIdRatioBased`` compares. Any other sampler is asked.
Ids are random 128 and 64 bits, as the SDK's ``RandomIdGenerator`` makes them. Spans
never carry a key, token, secret, query string or body.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Final

from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from gateway_core.tracing.batch import BatchProcessor
from gateway_core.tracing.w3c import format_traceparent, format_tracestate, parse_traceparent

__all__ = [
    "ENABLED",
    "Span",
    "SpanKind",
    "current_span",
    "current_trace_id",
    "format_traceparent",
    "parse_traceparent",
    "setup",
    "shutdown",
    "start_server_span",
    "start_span",
]

logger = logging.getLogger("gateway.tracing")

SCOPE: Final = InstrumentationScope("api-gateway", "1")
DEFAULT_SERVICE_NAME: Final = "api-gateway"
SDK_LOG_INTERVAL_S: Final = 60.0
SHUTDOWN_TIMEOUT_S: Final = 2.0

# Read by the request path before anything else: False until setup() turned tracing on.
ENABLED = False

_provider: TracerProvider | None = None
_processor: BatchProcessor | None = None
_resource: Resource | None = None
_setup_pid = 0
_atexit_registered = False
_current: ContextVar[Span | None] = ContextVar("gateway_current_span", default=None)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
# The trace state of a span whose trace has none, also what a SpanContext made without a
# tracestate holds (compare with ``is``).
NO_TRACE_STATE: Final = DEFAULT_TRACE_STATE
_UNSET = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)

# The sampling decision, compiled by setup() from the SDK sampler (see _compile_sampler):
# a new trace (and, unless parent-based, a remote parent's) is sampled when the low 64
# bits of its trace id are below _root_bound; parent-based, a remote parent's flag
# decides. _sampler is set instead when the sampler has no such equivalent: it is asked.
_LOW_64: Final = (1 << 64) - 1
_root_bound = 1 << 64
_parent_based = True
_sampler: Sampler | None = None


def _random_trace_id() -> int:
    trace_id = 0
    while not trace_id:
        trace_id = random.getrandbits(128)  # an id, not a secret (as the SDK's RandomIdGenerator)
    return trace_id


def _random_span_id() -> int:
    span_id = 0
    while not span_id:
        span_id = random.getrandbits(64)  # an id, not a secret (as the SDK's RandomIdGenerator)
    return span_id


# The id generators: the SDK provider's when it is not the random one setup() knows, else
# random bits without a Python frame (a zero, one chance in 2**64, is drawn again).
_RANDOM_TRACE_BITS: Final = functools.partial(random.getrandbits, 128)
_RANDOM_SPAN_BITS: Final = functools.partial(random.getrandbits, 64)
_new_trace_id: Callable[[], int] = _RANDOM_TRACE_BITS
_new_span_id: Callable[[], int] = _RANDOM_SPAN_BITS


class _Discard(dict):  # type: ignore[type-arg]  # a dict of anything, always empty
    """The attributes of an unsampled span: whatever is set is dropped, so callers need not check."""

    __slots__ = ()

    def __setitem__(self, key: object, value: object) -> None:
        return

    def update(self, *args: object, **kwargs: object) -> None:
        return

    def setdefault(self, key: object, default: object = None) -> object:
        return default

    def __ior__(self, other: object) -> _Discard:  # type: ignore[override,misc]  # stays empty
        return self


_DISCARD: Final = _Discard()


class Span:
    """One span being recorded. Unsampled spans carry ids for propagation and record nothing.

    Plain values only (ids as integers, attributes in a dict): the SDK's ``SpanContext``
    and ``ReadableSpan`` are built only when asked for (another exporter than OTLP, a
    test). An ended span is handed to the batch processor as it is and not changed again.
    """

    __slots__ = (
        "_context",
        "_trace_hex",
        "attributes",
        "end_ns",
        "kind",
        "name",
        "parent",
        "recording",
        "sampled",
        "span_id",
        "start_ns",
        "status",
        "trace_int",
        "trace_state",
    )

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        trace_id: int,
        span_id: int,
        sampled: bool,
        trace_state: TraceState,
        parent: SpanContext | Span | None,
        attributes: dict[str, object] | None = None,
        trace_hex: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.trace_int = trace_id
        self.span_id = span_id
        self.trace_state = trace_state
        self.parent = parent
        self.sampled = self.recording = sampled
        self._trace_hex = trace_hex
        self._context: SpanContext | None = None
        self.status: Status | None = None
        self.end_ns = 0
        if sampled:
            self.attributes: dict[str, object] = attributes if attributes is not None else {}
            self.start_ns = time.time_ns()
        else:
            self.attributes = _DISCARD
            self.start_ns = 0

    @property
    def context(self) -> SpanContext:
        """Return this span's SDK ``SpanContext``."""
        if self._context is None:
            self._context = SpanContext(
                self.trace_int,
                self.span_id,
                is_remote=False,
                trace_flags=_SAMPLED if self.sampled else _NOT_SAMPLED,
                trace_state=self.trace_state,
            )
        return self._context

    @property
    def trace_id(self) -> str:
        """Return the trace id as 32 hex digits."""
        trace_hex = self._trace_hex
        if trace_hex is None:
            trace_hex = self._trace_hex = f"{self.trace_int:032x}"
        return trace_hex

    def traceparent(self) -> str:
        """Return the ``traceparent`` that makes the receiver's span a child of this one."""
        trace_hex = self._trace_hex
        if trace_hex is None:
            trace_hex = self._trace_hex = f"{self.trace_int:032x}"
        return f"00-{trace_hex}-{self.span_id:016x}-{'01' if self.sampled else '00'}"

    def tracestate(self) -> str:
        """Return the ``tracestate`` to send beside :meth:`traceparent` (may be empty)."""
        state = self.trace_state
        return "" if state is NO_TRACE_STATE or not state else format_tracestate(state)

    def fail(self, error_type: str) -> None:
        """Mark the span failed with ``error_type`` (an error code or exception class name, never a message)."""
        if self.recording:
            self.attributes["error.type"] = error_type
            self.status = _ERROR

    def end(self) -> None:
        """Finish the span and queue it for export (at most once)."""
        if not self.recording:
            return
        self.recording = False
        self.end_ns = time.time_ns()
        processor = _processor
        if processor is not None:
            processor.on_end(self)

    @property
    def parent_context(self) -> SpanContext | None:
        """Return the parent's SDK ``SpanContext`` (remote or local), or None for a root span."""
        parent = self.parent
        return parent.context if isinstance(parent, Span) else parent

    def readable(self, resource: Resource | None = None) -> ReadableSpan:
        """Return the ended span as an SDK ``ReadableSpan`` (for exporters other than the OTLP encoder)."""
        return ReadableSpan(
            self.name,
            context=self.context,
            parent=self.parent_context,
            resource=resource if resource is not None else _resource,
            attributes=dict(self.attributes),
            kind=self.kind,
            status=self.status or _UNSET,
            start_time=self.start_ns,
            end_time=self.end_ns,
            instrumentation_scope=SCOPE,
        )


class _Unsampled(Span):
    """A span of an unsampled trace: ids only. Its constant fields are the class's, not set per span.

    Nothing writes them: ``end`` and ``fail`` do nothing unless recording (its attributes,
    set per span, drop whatever is put in them).
    """

    __slots__ = ()
    sampled = False  # type: ignore[assignment]  # class constants in place of the slots
    recording = False  # type: ignore[assignment]
    status = None  # type: ignore[assignment]
    start_ns = end_ns = 0  # type: ignore[assignment]

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        trace_id: int,
        span_id: int,
        trace_state: TraceState,
        parent: SpanContext | Span | None,
        trace_hex: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.trace_int = trace_id
        self.span_id = span_id
        self.trace_state = trace_state
        self.parent = parent
        self._trace_hex = trace_hex
        self._context = None
        self.attributes = _DISCARD

    def traceparent(self) -> str:
        """Return the ``traceparent`` naming this span as the parent, flags ``00``."""
        trace_hex = self._trace_hex
        if trace_hex is None:
            trace_hex = self._trace_hex = f"{self.trace_int:032x}"
        return f"00-{trace_hex}-{self.span_id:016x}-00"


def start_span(
    name: str,
    kind: SpanKind,
    *,
    parent: SpanContext | Span | None = None,
    attributes: dict[str, object] | None = None,
) -> Span:
    """Start a span; ``parent`` is a remote context (a received ``traceparent``), a local span, or None (a root).

    Only call while :data:`ENABLED`. A local parent's sampling decision is kept; a remote
    parent or a new trace is decided by the configured sampler. An unsampled span keeps
    no attributes.
    """
    if parent is None:  # a new trace
        trace_id = _new_trace_id() or _random_trace_id()
        state = NO_TRACE_STATE
        sampled = (trace_id & _LOW_64) < _root_bound
    elif isinstance(parent, Span):  # a local parent: its decision
        if not parent.sampled:
            return _Unsampled(
                name, kind, parent.trace_int, _new_span_id() or _random_span_id(), parent.trace_state, parent
            )
        return Span(
            name,
            kind,
            parent.trace_int,
            _new_span_id() or _random_span_id(),
            True,
            parent.trace_state,
            parent,
            attributes,
            parent._trace_hex,
        )
    else:  # a remote parent (a SpanContext)
        trace_id = parent.trace_id
        state = parent.trace_state
        # Parent-based: the remote parent's sampled flag; otherwise its trace id, as for a new trace.
        sampled = bool(parent.trace_flags & TraceFlags.SAMPLED) if _parent_based else (trace_id & _LOW_64) < _root_bound
    sampler = _sampler
    if sampler is not None:  # a sampler without a fast equivalent: ask it
        context = trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent)) if parent is not None else None
        result = sampler.should_sample(context, trace_id, name, kind, attributes)
        sampled = result.decision is Decision.RECORD_AND_SAMPLE
        state = result.trace_state if result.trace_state is not None else NO_TRACE_STATE
    if not sampled:
        return _Unsampled(name, kind, trace_id, _new_span_id() or _random_span_id(), state, parent)
    return Span(name, kind, trace_id, _new_span_id() or _random_span_id(), True, state, parent, attributes)


_SERVER: Final = SpanKind.SERVER


def start_server_span(name: str, traceparent: str | None, tracestate: str | None) -> Span:
    """Start a request's server span and make it current; it continues ``traceparent`` when that is valid.

    ``traceparent`` and ``tracestate`` are the request's headers as received (None when
    absent). Only call while :data:`ENABLED`. The same as :func:`start_span` with the
    parsed parent, and :func:`activate`; a request without a ``traceparent`` (most) is
    decided without parsing or asking anything.
    """
    if traceparent is None and _sampler is None:
        trace_id = _new_trace_id() or _random_trace_id()
        span_id = _new_span_id() or _random_span_id()
        if (trace_id & _LOW_64) < _root_bound:
            span: Span = Span(name, _SERVER, trace_id, span_id, True, NO_TRACE_STATE, None)
        else:
            span = _Unsampled(name, _SERVER, trace_id, span_id, NO_TRACE_STATE, None)
    else:
        parent = parse_traceparent(traceparent, tracestate) if traceparent else None
        span = start_span(name, _SERVER, parent=parent)
    _current.set(span)
    return span


# activate(span): make ``span`` the current span of this thread or greenlet (the parent of
# what it calls); current_span(): the span activated last there, or None. The context
# variable's own methods: called several times a request, without a Python frame.
activate: Final[Callable[[Span | None], object]] = _current.set
current_span: Final[Callable[[], Span | None]] = _current.get


def current_trace_id() -> str | None:
    """Return the current span's trace id (32 hex digits), or None when tracing is off or no span is active."""
    if not ENABLED:
        return None
    span = _current.get()
    return span.trace_id if span is not None else None


def remote_parent(headers: Mapping[str, str], traceparent: str, tracestate: str) -> SpanContext | None:
    """Return the parent named by the ``traceparent`` / ``tracestate`` keys of ``headers``, or None."""
    return parse_traceparent(headers.get(traceparent), headers.get(tracestate))


def _compile_sampler(sampler: Sampler) -> tuple[int, bool, Sampler | None]:
    """Return ``(root bound, parent-based, sampler to ask)`` deciding as ``sampler`` does.

    ``always_on`` / ``always_off`` are the bounds 2**64 and 0 (every and no trace id),
    ``traceidratio`` its own bound, the ``parentbased_`` forms the same for a new trace
    and the remote parent's flag otherwise (local parents: always the parent's
    decision). Anything else, a ``ParentBased`` with other delegates included, is asked.
    """
    everything = 1 << 64

    def bound(root: Sampler) -> int | None:
        if root is ALWAYS_ON:
            return everything
        if root is ALWAYS_OFF:
            return 0
        if type(root) is TraceIdRatioBased:
            return root.bound
        return None

    if isinstance(sampler, ParentBased) and type(sampler).should_sample is ParentBased.should_sample:
        delegates = (
            sampler._remote_parent_sampled,
            sampler._remote_parent_not_sampled,
            sampler._local_parent_sampled,
            sampler._local_parent_not_sampled,
        )
        root_bound = bound(sampler._root)
        if delegates == (ALWAYS_ON, ALWAYS_OFF, ALWAYS_ON, ALWAYS_OFF) and root_bound is not None:
            return root_bound, True, None
        return everything, True, sampler
    root_bound = bound(sampler)
    if root_bound is not None:
        return root_bound, False, None
    return everything, True, sampler


# --- Setup -----------------------------------------------------------------------------------


def setup(default_service_name: str = DEFAULT_SERVICE_NAME) -> bool:
    """Turn tracing on in this process when the ``OTEL_*`` variables ask for it; return whether it is on.

    Idempotent within a process; a forked child calls it again to get its own exporter.
    An unusable setting is logged and leaves tracing off: tracing never stops a gateway.
    """
    global ENABLED, _provider, _processor, _resource, _setup_pid, _atexit_registered
    global _root_bound, _parent_based, _sampler, _new_trace_id, _new_span_id
    if _setup_pid == os.getpid():
        return ENABLED
    _setup_pid = os.getpid()
    ENABLED = False
    env = os.environ
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or exporter_name in ("", "none"):
        return False
    resource = Resource.create({})  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": default_service_name}))
    try:
        exporter = _exporter(exporter_name, env, resource)
    except (OSError, ValueError) as exc:
        logger.error("tracing left off: %s", exc)
        return False
    if exporter is None:
        return False
    # The provider is asked for what OTEL_TRACES_SAMPLER selects and its id generator; spans are ours.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    _root_bound, _parent_based, _sampler = _compile_sampler(provider.sampler)
    generator = provider.id_generator
    if type(generator) is RandomIdGenerator:
        _new_trace_id, _new_span_id = _RANDOM_TRACE_BITS, _RANDOM_SPAN_BITS
    else:
        _new_trace_id, _new_span_id = generator.generate_trace_id, generator.generate_span_id
    if _processor is not None:  # a forked child's copy of its parent's, or a test's setup again
        _processor.discard()
    processor = BatchProcessor.from_env(exporter, env)
    _quiet_sdk_logs()
    _provider, _processor, _resource = provider, processor, resource
    ENABLED = True
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True
    logger.info(
        "tracing on",
        extra={"exporter": exporter_name, "service_name": resource.attributes.get("service.name")},
    )
    return True


def shutdown(timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Export what is queued and stop this process's tracing (worker exit), waiting at most ``timeout_s``.

    The SDK's own exit handler waits up to 30 s for a collector that does not answer,
    which would hold every restart of a gunicorn worker that long: the last export gets
    ``timeout_s``, then the process goes on exiting without it.
    """
    global ENABLED, _provider, _processor
    processor = _processor
    ENABLED = False
    _provider = _processor = None
    if processor is None or _setup_pid != os.getpid():
        return
    stopper = threading.Thread(target=processor.shutdown, args=(timeout_s,), name="tracing-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout_s)


def force_flush(timeout_ms: int = 5000) -> None:
    """Export every queued span now (tests, a worker about to exit)."""
    if _processor is not None:
        _processor.force_flush(timeout_ms)


class _ReadableSpans:
    """Hand an SDK exporter (the console's) ``ReadableSpan`` copies of the gateway's span records."""

    def __init__(self, exporter: object, resource: Resource) -> None:
        self._exporter = exporter
        self._resource = resource

    def export(self, spans: list[Span]) -> object:
        return self._exporter.export([span.readable(self._resource) for span in spans])  # type: ignore[attr-defined]

    def shutdown(self) -> object:
        return self._exporter.shutdown()  # type: ignore[attr-defined]


def _exporter(name: str, env: Mapping[str, str], resource: Resource) -> object | None:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return _ReadableSpans(ConsoleSpanExporter(), resource)
    if name != "otlp":
        logger.error("tracing left off: OTEL_TRACES_EXPORTER=%s is not supported (otlp, console, none)", name)
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
    if protocol.strip() != "http/protobuf":
        logger.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; using http/protobuf", protocol)
    from gateway_core.tracing.otlp import SpanExporter

    options: dict[str, object] = {}
    headers_file = env.get("OTEL_EXPORTER_OTLP_HEADERS_FILE")
    if headers_file and not env.get("OTEL_EXPORTER_OTLP_HEADERS"):
        with open(headers_file, encoding="utf-8") as handle:
            options["headers"] = _parse_headers(handle.read().strip())
    return SpanExporter(resource=resource, scope=SCOPE, **options)


def _parse_headers(value: str) -> dict[str, str]:
    """Parse ``key=value,key2=value2`` (the ``OTEL_EXPORTER_OTLP_HEADERS`` format, values percent-encoded)."""
    from urllib.parse import unquote

    headers = {}
    for item in value.split(","):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError("OTEL_EXPORTER_OTLP_HEADERS_FILE: expected key=value pairs")
        headers[unquote(key.strip()).lower()] = unquote(raw.strip())
    return headers


class _OncePerInterval(logging.Filter):
    """Let each distinct SDK message through at most once per interval.

    A collector that is down makes the SDK log every failed export and, once its queue is
    full, every dropped span: at 100 % sampling that would be a log line per request.
    """

    def __init__(self, interval_s: float = SDK_LOG_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = f"{record.name}:{record.msg}"
        if now - self._last.get(key, -self.interval_s) < self.interval_s:
            return False
        self._last[key] = now
        return True


def _quiet_sdk_logs() -> None:
    # The "queue full, dropping" warning runs inside on_end, on the request path: above
    # WARNING it is not even formatted. Export failures still show, once a minute.
    logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)
    for name in ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "opentelemetry.sdk._shared_internal"):
        sdk_logger = logging.getLogger(name)
        if not any(isinstance(f, _OncePerInterval) for f in sdk_logger.filters):
            sdk_logger.addFilter(_OncePerInterval())
