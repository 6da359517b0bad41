"""The batch span processor: ended spans wait in a queue and are exported in batches by a daemon thread.

What the SDK's ``BatchSpanProcessor`` does, with the same ``OTEL_BSP_*`` variables, for
the gateway's own span records (``gateway_core.tracing.Span``): ending a span appends it
to a deque, and that is all the request pays. The SDK's processor would first need an
SDK ``ReadableSpan`` (and its ``SpanContext`` objects) per span, built in the request,
and checks the process id on every span. Here the export thread (a greenlet under
gevent) reads the records as they are, between requests.

- ``OTEL_BSP_SCHEDULE_DELAY`` (ms, 5000): the longest a span waits for its export.
- ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (512): spans per export; a full batch is exported
  without waiting for the delay.
- ``OTEL_BSP_MAX_QUEUE_SIZE`` (2048): spans waiting at most; beyond it new spans are
  dropped (counted in :attr:`BatchProcessor.dropped`, logged at most once a minute), so a collector that is down or
  slow costs memory up to this bound and the request path nothing.

A forked child gets a new export thread and an empty queue (its parent's spans are its
parent's to export).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

logger = logging.getLogger("gateway.tracing")

DEFAULT_SCHEDULE_DELAY_MS: Final = 5000
DEFAULT_MAX_QUEUE_SIZE: Final = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE: Final = 512
DROPPED_LOG_INTERVAL_S: Final = 60.0


class Exporter(Protocol):
    """What the processor hands batches to."""

    def export(self, spans: Sequence[object], /) -> object: ...

    def shutdown(self) -> object: ...


class BatchProcessor:
    """Queue ended spans; export them in batches from a daemon thread (a greenlet under gevent)."""

    def __init__(
        self,
        exporter: Exporter,
        *,
        schedule_delay_ms: float = DEFAULT_SCHEDULE_DELAY_MS,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE,
    ) -> None:
        if schedule_delay_ms <= 0 or max_queue_size <= 0 or max_export_batch_size <= 0:
            raise ValueError("the batch processor's delay, queue size and batch size must be positive")
        self._exporter = exporter
        self._delay_s = schedule_delay_ms / 1000
        self._max_queue = max_queue_size
        self._batch = min(max_export_batch_size, max_queue_size)
        self._queue: collections.deque[object] = collections.deque()
        self._export_lock = threading.Lock()
        self._wake = threading.Event()
        self._shutdown = False
        self.dropped = 0
        self._dropped_reported = 0
        self._dropped_reported_at = -DROPPED_LOG_INTERVAL_S
        self._start_thread()
        if hasattr(os, "register_at_fork"):
            reference = weakref.WeakMethod(self._after_fork)

            def after_fork_in_child() -> None:
                method = reference()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=after_fork_in_child)

    @classmethod
    def from_env(cls, exporter: Exporter, env: Mapping[str, str]) -> BatchProcessor:
        """Return a processor configured by the ``OTEL_BSP_*`` variables (an unusable value: its default)."""
        return cls(
            exporter,
            schedule_delay_ms=_positive(env, "OTEL_BSP_SCHEDULE_DELAY", DEFAULT_SCHEDULE_DELAY_MS),
            max_queue_size=_positive(env, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE),
            max_export_batch_size=_positive(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH_SIZE),
        )

    @property
    def exporter(self) -> Exporter:
        """Return the exporter the batches go to."""
        return self._exporter

    def on_end(self, span: object) -> None:
        """Queue an ended span for export (the request path: an append, and a wake-up per full batch)."""
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) >= self._batch and not self._wake.is_set():  # the thread clears it before it looks
            self._wake.set()

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        """Export everything queued now, in the caller's thread; False once shut down."""
        if self._shutdown:
            return False
        self._export(everything=True)
        return True

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Export what is queued and stop the thread (waiting at most ``timeout_s``), then shut the exporter down."""
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        self._thread.join(timeout_s)
        self._exporter.shutdown()

    def discard(self) -> None:
        """Stop without exporting what is queued (a forked child's copy of its parent's processor)."""
        self._shutdown = True
        self._queue.clear()
        self._wake.set()

    # --- The export thread --------------------------------------------------------------------

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-span-export", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        self._queue.clear()
        self._export_lock = threading.Lock()
        self._wake = threading.Event()
        if not self._shutdown:
            self._start_thread()

    def _run(self) -> None:
        while not self._shutdown:
            self._wake.clear()  # before looking at the queue: a wake-up from now on is not lost
            full = len(self._queue) >= self._batch or self._wake.wait(self._delay_s)
            if self._shutdown:
                break
            self._export(everything=not full)  # woken by a full batch: full batches; the delay: all
            self._report_dropped()
        self._export(everything=True)

    def _report_dropped(self) -> None:
        now = time.monotonic()
        if self.dropped > self._dropped_reported and now - self._dropped_reported_at >= DROPPED_LOG_INTERVAL_S:
            logger.warning("span queue full: %d spans dropped so far", self.dropped)
            self._dropped_reported, self._dropped_reported_at = self.dropped, now

    def _export(self, *, everything: bool) -> None:
        with self._export_lock:
            queue, size = self._queue, self._batch
            while queue and (everything or len(queue) >= size):
                batch = [queue.popleft() for _ in range(min(size, len(queue)))]
                token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
                try:
                    self._exporter.export(batch)
                except Exception as exc:
                    logger.error("span export failed: %s", type(exc).__name__)
                finally:
                    detach(token)


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        logger.warning("%s=%s is not a positive integer; using %d", name, raw, default)
        return default
    return value
