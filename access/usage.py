"""``last_used_at`` bookkeeping: at most once a minute per key, written off the request path.

The request path only notes "key K was used at T" in memory (``key_used``); a
background flusher (a greenlet under gevent, a thread otherwise) claims each key's
minute in the shared cache, so one process of the deployment writes it, and writes
the notes in one batched UPDATE every few seconds. A failed write is logged and retried with the
next batch, never dropped silently.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

logger = logging.getLogger("access.usage")


class UsageRecorder:
    """Collect key uses and flush them to ``ApiKey.last_used_at`` in batches.

    Options (defaults in brackets): ``min_interval_s`` [60] between two notes of the
    same key in this process; ``flush_interval_s`` [5] between flushes; ``max_pending``
    [10000] notes kept while the database is failing (the newest win).
    """

    def __init__(
        self,
        *,
        min_interval_s: float = 60.0,
        flush_interval_s: float = 5.0,
        max_pending: int = 10_000,
        write: Callable[[dict[str, datetime]], None] | None = None,
        claim: Callable[[str], bool] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.min_interval_s = min_interval_s
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.monotonic = monotonic
        self.now = now
        self._write = write or write_last_used
        self._claim = claim or claim_minute
        self._noted_at: dict[str, float] = {}
        self._pending: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()

    def key_used(self, key_id: str) -> None:
        """Note a use of ``key_id``; cheap, no I/O. At most one note per key per interval."""
        now = self.monotonic()
        last = self._noted_at.get(key_id)
        if last is not None and now - last < self.min_interval_s:
            return
        with self._lock:
            self._noted_at[key_id] = now
            if len(self._pending) < self.max_pending or key_id in self._pending:
                self._pending[key_id] = self.now()
            if len(self._noted_at) > 4 * self.max_pending:
                # Forget notes older than the interval so the table stays bounded.
                self._noted_at = {k: t for k, t in self._noted_at.items() if now - t < self.min_interval_s}
        if self._flusher is None:
            self._start()

    def flush(self) -> int:
        """Write pending notes now; return how many were written (0 on failure, logged)."""
        with self._lock:
            batch, self._pending = self._pending, {}
        # Other workers and nodes note the same keys: only the first to claim a key's
        # minute in the shared cache writes it.
        batch = {key_id: used_at for key_id, used_at in batch.items() if self._claim(key_id)}
        if not batch:
            return 0
        try:
            self._write(batch)
        except Exception:
            logger.exception("Could not record last_used_at for %d API key(s); retrying next batch", len(batch))
            with self._lock:
                for key_id, used_at in batch.items():
                    if len(self._pending) < self.max_pending:
                        self._pending.setdefault(key_id, used_at)
            return 0
        return len(batch)

    def stop(self) -> None:
        """Stop the flusher and write what is pending."""
        self._stop.set()
        self.flush()

    def _start(self) -> None:
        with self._lock:
            if self._flusher is not None:
                return
            # Under gevent, threading is monkey-patched: this thread is a greenlet.
            self._flusher = threading.Thread(target=self._run, name="last-used-flusher", daemon=True)
        self._flusher.start()
        atexit.register(self.stop)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()


def claim_minute(key_id: str) -> bool:
    """Return True when no process wrote ``key_id``'s last_used_at in the last minute.

    Uses the shared cache (Redis when configured, so the minute is claimed once per
    deployment). When the cache fails, the write goes ahead: a duplicate write is
    harmless, a lost one is not.
    """
    from django.core.cache import cache

    try:
        return bool(cache.add(f"access:last-used:{key_id}", 1, 60))
    except Exception as exc:  # any cache client error
        logger.debug("last_used_at claim skipped (%s)", type(exc).__name__)
        return True


def write_last_used(batch: dict[str, datetime]) -> None:
    """Set ``last_used_at`` for the keys in ``batch`` with one UPDATE.

    ``bulk_update`` sends no save signals, so recording usage never triggers a
    config reload. The connection is closed after each batch: this runs in its own
    thread (or greenlet), which Django gives its own connection.
    """
    from django.db import close_old_connections, connection

    from access.models import ApiKey

    try:
        rows = [ApiKey(id=key_id, last_used_at=used_at) for key_id, used_at in batch.items()]
        ApiKey.objects.bulk_update(rows, ["last_used_at"], batch_size=500)
    finally:
        close_old_connections()
        connection.close()


_recorder: UsageRecorder | None = None


def key_used(key_id: str) -> None:
    """Note that ``key_id`` was just used (the process-wide recorder)."""
    global _recorder
    if _recorder is None:
        _recorder = UsageRecorder()
    _recorder.key_used(key_id)
