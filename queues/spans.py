"""The spans of the queue path: publish (producer), task run (consumer), callback (client).

The trace goes with the message: the producer span's ``traceparent`` (and ``tracestate``)
replaces the client's in the message headers, the worker's task span continues it, and a
callback is delivered inside it, so ``POST -> 202 -> worker -> callback`` is one trace.
Every helper is a no-op while tracing is off. Attribute names follow the OpenTelemetry
messaging and HTTP conventions; a message body or callback query string never goes in.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from urllib.parse import urlsplit

from celery.exceptions import Reject, Retry

from gateway_core import tracing
from gateway_core.tracing import Span, SpanKind

WORKER_SERVICE_NAME = "api-gateway-worker"


@cache
def _messaging_system() -> str:
    """Return the broker's ``messaging.system`` value (``rabbitmq``, ``redis``, ``filesystem``)."""
    from django.conf import settings

    scheme = urlsplit(str(settings.CELERY_BROKER_URL)).scheme.split("+", 1)[0]
    return "rabbitmq" if scheme in ("amqp", "amqps", "pyamqp") else scheme or "unknown"


def publish_start(queue: str) -> Span | None:
    """Start the producer span of a publish to ``queue``, child of the request's span; None when off."""
    if not tracing.ENABLED:
        return None
    span = tracing.start_span(f"publish {queue}", SpanKind.PRODUCER, parent=tracing.current_span())
    if span.recording:  # an unsampled span only carries ids
        span.attributes.update(
            {
                "messaging.system": _messaging_system(),
                "messaging.destination.name": queue,
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
            }
        )
    return span


def trace_headers(span: Span | None, headers: dict[str, str]) -> dict[str, str]:
    """Put ``span``'s trace context in message ``headers`` (replacing the client's); return them."""
    if span is not None:
        headers["traceparent"] = span.traceparent()
        state = span.tracestate()
        if state:
            headers["tracestate"] = state
        else:
            headers.pop("tracestate", None)
    return headers


def publish_end(span: Span | None, task_id: str, error_code: str | None = None) -> None:
    """End a producer span: confirmed, or failed with the gateway's error code."""
    if span is None:
        return
    span.attributes["messaging.message.id"] = task_id
    if error_code is not None:
        span.fail(error_code)
    span.end()


@contextmanager
def task_run(queue: str, raw: object, retries: int) -> Iterator[None]:
    """Record one task run as a consumer span continuing the message's trace, active meanwhile."""
    tracing.setup(WORKER_SERVICE_NAME)  # once per process; the pool's processes set up at start already
    if not tracing.ENABLED:
        yield
        return
    headers = raw.get("headers") if isinstance(raw, Mapping) else None
    parent = None
    if isinstance(headers, Mapping):
        traceparent, tracestate = headers.get("traceparent"), headers.get("tracestate")
        parent = tracing.parse_traceparent(
            traceparent if isinstance(traceparent, str) else None, tracestate if isinstance(tracestate, str) else None
        )
    task_id = raw.get("task_id") if isinstance(raw, Mapping) else None
    span = tracing.start_span(
        f"process {queue}",
        SpanKind.CONSUMER,
        parent=parent,
        attributes={
            "messaging.system": _messaging_system(),
            "messaging.destination.name": queue,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.id": str(task_id),
            "gateway.task.retries": retries,
        },
    )
    tracing.activate(span)
    try:
        yield
    except Retry:
        span.attributes["gateway.task.status"] = "retrying"
        raise
    except Reject:
        span.attributes["gateway.task.status"] = "requeued"
        raise
    except BaseException as exc:
        span.fail(type(exc).__name__)
        raise
    finally:
        tracing.activate(None)
        span.end()


def task_failed() -> None:
    """Mark the running task's span failed (the task failed for good)."""
    span = tracing.current_span() if tracing.ENABLED else None
    if span is not None:
        span.attributes["gateway.task.status"] = "failed"
        span.fail("task_failed")


def callback_trace() -> dict[str, str]:
    """Return the callback task's ``traceparent`` keyword: the running task's span (empty when off)."""
    span = tracing.current_span() if tracing.ENABLED else None
    return {"traceparent": span.traceparent()} if span is not None else {}


@contextmanager
def callback_post(url: str, traceparent: str | None) -> Iterator[tuple[Span | None, dict[str, str]]]:
    """Record a callback POST as a client span; yield it and the headers that carry it to the receiver."""
    if not tracing.ENABLED:
        yield None, {}
        return
    parts = urlsplit(url)
    attributes: dict[str, object] = {
        "http.request.method": "POST",
        "server.address": parts.hostname or "",
        "url.scheme": parts.scheme,
        # Without query string and credentials: a receiver's URL may carry a token there.
        "url.full": f"{parts.scheme}://{_host_port(parts)}{parts.path or '/'}",
    }
    if parts.port is not None:
        attributes["server.port"] = parts.port
    span = tracing.start_span(
        "POST", SpanKind.CLIENT, parent=tracing.parse_traceparent(traceparent), attributes=attributes
    )
    try:
        yield span, {"traceparent": span.traceparent()}
    except BaseException as exc:
        span.fail(type(exc).__name__)
        raise
    finally:
        span.end()


def _host_port(parts: object) -> str:
    hostname = getattr(parts, "hostname", "") or ""
    host = f"[{hostname}]" if ":" in hostname else hostname
    port = getattr(parts, "port", None)
    return f"{host}:{port}" if port is not None else host
