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
  ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512): the batch processor, which exports from its own
  thread (a greenlet under gevent), never on the request path; a full queue drops spans.

The request path's only cost while tracing is off is reading :data:`ENABLED`. Spans
are recorded by :class:`Span`, a small recorder that hands an SDK ``ReadableSpan`` to
the SDK's batch processor when it ends: the SDK's own ``Tracer.start_span`` (attribute
validation, locks, a second copy at the end) costs 30-40 µs a span on the reference
machine, several times this. Sampling uses the SDK sampler the variables select, ids its
id generator. Spans never carry a key, token, secret, query string or body.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Final

from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

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
_processor: SpanProcessor | None = None
_resource: Resource | None = None
_setup_pid = 0
_atexit_registered = False
_current: ContextVar[Span | None] = ContextVar("gateway_current_span", default=None)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class Span:
    """One span being recorded. Unsampled spans carry ids for propagation and record nothing.

    Ids are kept as integers and the SDK's ``SpanContext`` is built only when asked for
    (a sampled span's export, a test): at 1 % sampling most spans never need one.
    """

    __slots__ = (
        "_context",
        "_trace_hex",
        "attributes",
        "kind",
        "name",
        "parent",
        "recording",
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
        *,
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
        self.recording = sampled
        self.attributes: dict[str, object] = attributes if attributes is not None else {}
        self.status: Status | None = None
        self.start_ns = time.time_ns() if sampled else 0
        self._trace_hex = trace_hex
        self._context: SpanContext | None = None

    @property
    def context(self) -> SpanContext:
        """Return this span's SDK ``SpanContext``."""
        if self._context is None:
            flags = _SAMPLED if self.recording or self.start_ns else _NOT_SAMPLED
            self._context = SpanContext(
                self.trace_int, self.span_id, is_remote=False, trace_flags=flags, trace_state=self.trace_state
            )
        return self._context

    @property
    def trace_id(self) -> str:
        """Return the trace id as 32 hex digits."""
        if self._trace_hex is None:
            self._trace_hex = f"{self.trace_int:032x}"
        return self._trace_hex

    def traceparent(self) -> str:
        """Return the ``traceparent`` that makes the receiver's span a child of this one."""
        return f"00-{self.trace_id}-{self.span_id:016x}-{'01' if self.recording or self.start_ns else '00'}"

    def tracestate(self) -> str:
        """Return the ``tracestate`` to send beside :meth:`traceparent` (may be empty)."""
        return format_tracestate(self.trace_state)

    def fail(self, error_type: str) -> None:
        """Mark the span failed with ``error_type`` (an error code or exception class name, never a message)."""
        if self.recording:
            self.attributes["error.type"] = error_type
            self.status = Status(StatusCode.ERROR)

    def end(self) -> None:
        """Finish the span and queue it for export (at most once)."""
        if not self.recording:
            return
        self.recording = False  # start_ns stays set: the span keeps saying "sampled" to its children
        processor, resource = _processor, _resource
        if processor is None or resource is None:
            return
        parent = self.parent
        processor.on_end(
            ReadableSpan(
                self.name,
                context=self.context,
                parent=parent.context if isinstance(parent, Span) else parent,
                resource=resource,
                attributes=self.attributes,
                kind=self.kind,
                status=self.status or _UNSET,
                start_time=self.start_ns,
                end_time=time.time_ns(),
                instrumentation_scope=SCOPE,
            )
        )

    @property
    def sampled(self) -> bool:
        """Return whether this span's trace is sampled (recorded and exported)."""
        return self.recording or bool(self.start_ns)


_UNSET = Status(StatusCode.UNSET)
_EMPTY_STATE = TraceState()


def start_span(
    name: str,
    kind: SpanKind,
    *,
    parent: SpanContext | Span | None = None,
    attributes: dict[str, object] | None = None,
) -> Span:
    """Start a span; ``parent`` is a remote context (a received ``traceparent``), a local span, or None (a root).

    Only call while :data:`ENABLED`. A local parent's sampling decision is kept; a remote
    parent or a new trace is decided by the configured sampler.
    """
    provider = _provider
    assert provider is not None  # noqa: S101 - callers check ENABLED first
    span_id = provider.id_generator.generate_span_id()
    if isinstance(parent, Span):
        return Span(
            name,
            kind,
            parent.trace_int,
            span_id,
            sampled=parent.sampled,
            trace_state=parent.trace_state,
            parent=parent,
            attributes=attributes,
            trace_hex=parent._trace_hex,
        )
    trace_id = parent.trace_id if parent is not None else provider.id_generator.generate_trace_id()
    sampler_parent = trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent)) if parent is not None else None
    result = provider.sampler.should_sample(sampler_parent, trace_id, name, kind, attributes)
    return Span(
        name,
        kind,
        trace_id,
        span_id,
        sampled=result.decision is Decision.RECORD_AND_SAMPLE,
        trace_state=result.trace_state if result.trace_state is not None else _EMPTY_STATE,
        parent=parent,
        attributes=attributes,
    )


def activate(span: Span | None) -> None:
    """Make ``span`` the current span of this thread or greenlet (the parent of what it calls)."""
    _current.set(span)


def current_span() -> Span | None:
    """Return the span activated last in this thread or greenlet, or None."""
    return _current.get()


def current_trace_id() -> str | None:
    """Return the current span's trace id (32 hex digits), or None when tracing is off or no span is active."""
    if not ENABLED:
        return None
    span = _current.get()
    return span.trace_id if span is not None else None


def remote_parent(headers: Mapping[str, str], traceparent: str, tracestate: str) -> SpanContext | None:
    """Return the parent named by the ``traceparent`` / ``tracestate`` keys of ``headers``, or None."""
    return parse_traceparent(headers.get(traceparent), headers.get(tracestate))


# --- Setup -----------------------------------------------------------------------------------


def setup(default_service_name: str = DEFAULT_SERVICE_NAME) -> bool:
    """Turn tracing on in this process when the ``OTEL_*`` variables ask for it; return whether it is on.

    Idempotent within a process; a forked child calls it again to get its own exporter.
    An unusable setting is logged and leaves tracing off: tracing never stops a gateway.
    """
    global ENABLED, _provider, _processor, _resource, _setup_pid, _atexit_registered
    if _setup_pid == os.getpid():
        return ENABLED
    _setup_pid = os.getpid()
    ENABLED = False
    env = os.environ
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or exporter_name in ("", "none"):
        return False
    try:
        exporter = _exporter(exporter_name, env)
    except (OSError, ValueError) as exc:
        logger.error("tracing left off: %s", exc)
        return False
    if exporter is None:
        return False
    resource = Resource.create({})  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": default_service_name}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # ours is bounded: see shutdown()
    processor = BatchSpanProcessor(exporter)
    provider.add_span_processor(processor)
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
    provider = _provider
    ENABLED = False
    _provider = _processor = None
    if provider is None or _setup_pid != os.getpid():
        return
    stopper = threading.Thread(target=provider.shutdown, name="tracing-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout_s)


def force_flush(timeout_ms: int = 5000) -> None:
    """Export every queued span now (tests, a worker about to exit)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def _exporter(name: str, env: Mapping[str, str]) -> object | None:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
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
    return SpanExporter(**options)


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
