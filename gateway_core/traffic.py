"""Per-minute traffic aggregates behind the admin dashboard.

Each gateway worker counts its requests per (minute, service) in memory — an
increment under a lock, nothing else on the request path — and a background thread
flushes the counts every few seconds to shared storage:

- ``RedisTrafficStore`` when ``REDIS_URL`` is set: ``HINCRBY`` into one hash per minute,
  so every worker of every gateway node adds into the same numbers (kept two hours);
- ``FileTrafficStore`` otherwise: one JSON file per worker in ``GATEWAY_TRAFFIC_DIR``,
  summed by the reader; right for one machine (the quick start), not for several.

A row is ``[requests, 4xx, 5xx, *latency bucket counts, fallbacks, circuit_open,
upstream failures]``; latency buckets are fixed (``LATENCY_BOUNDS_MS``), so p50/p95 are
estimated from them, within a bucket's width. Rows are kept per service and version
(``"orders@v2"``; the default URL is version ``default``), so ``health_summary`` shows
each version's error rate, p95, fallback share and open breakers over the last five
minutes, across every worker (and, with Redis, every node), from the same counts.
"""

from __future__ import annotations

import atexit
import bisect
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

# Upper bounds of the latency buckets, in milliseconds; one more bucket holds the rest.
LATENCY_BOUNDS_MS: tuple[int, ...] = (
    5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2500, 5000, 10000, 30000,
)  # fmt: skip
REQUESTS, CLIENT_ERRORS, SERVER_ERRORS = 0, 1, 2
FIRST_BUCKET = 3
LAST_BUCKET = FIRST_BUCKET + len(LATENCY_BOUNDS_MS)  # the open-ended bucket
# Answers served by the fallback URL, refused with 503 circuit_open, and 502/504 upstream failures.
FALLBACKS, CIRCUIT_OPEN, UPSTREAM_FAILURES = LAST_BUCKET + 1, LAST_BUCKET + 2, LAST_BUCKET + 3
ROW_LENGTH = UPSTREAM_FAILURES + 1
HEALTH_WINDOW_S = 300
VERSION_SEPARATOR = "@"  # neither service nor version names may hold it
FLUSH_INTERVAL_S = 5.0
RETENTION_S = 2 * 3600  # the dashboard shows one hour; keep two so a late reader still sees it

Row = list[int]
Rows = dict[tuple[int, str], Row]  # (epoch minute, service) -> row


class TrafficStore(Protocol):
    """Shared storage of per-minute rows: workers add, the dashboard reads."""

    def add(self, rows: Mapping[tuple[int, str], Sequence[int]]) -> None:
        """Add ``rows`` (increments since the last call) to the shared totals."""

    def read(self, first_minute: int, last_minute: int) -> Rows:
        """Return the summed rows of every worker for the minutes in the closed range."""


def new_row() -> Row:
    return [0] * ROW_LENGTH


def add_row(total: Row, increment: Sequence[int]) -> None:
    for index, value in enumerate(increment[:ROW_LENGTH]):
        total[index] += value


class RedisTrafficStore:
    """Every worker of every node increments one Redis hash per minute."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

    def _key(self, minute: int) -> str:
        return f"{self.prefix}{minute}"

    def add(self, rows: Mapping[tuple[int, str], Sequence[int]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        minutes = set()
        for (minute, service), row in rows.items():
            minutes.add(minute)
            for index, value in enumerate(row):
                if value:
                    pipe.hincrby(self._key(minute), f"{service}|{index}", value)
        for minute in minutes:
            pipe.expire(self._key(minute), RETENTION_S)
        pipe.execute()

    def read(self, first_minute: int, last_minute: int) -> Rows:
        minutes = range(first_minute, last_minute + 1)
        pipe = self.client.pipeline(transaction=False)
        for minute in minutes:
            pipe.hgetall(self._key(minute))
        rows: Rows = {}
        for minute, fields in zip(minutes, pipe.execute(), strict=True):
            for field, value in fields.items():
                service, _, index = field.decode().rpartition("|")
                if index.isdigit() and int(index) < ROW_LENGTH:
                    rows.setdefault((minute, service), new_row())[int(index)] += int(value)
        return rows


class FileTrafficStore:
    """One JSON file per worker on this machine; the reader sums them."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.clock = clock
        self.totals: Rows = {}
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"

    def add(self, rows: Mapping[tuple[int, str], Sequence[int]]) -> None:
        for key, row in rows.items():
            add_row(self.totals.setdefault(key, new_row()), row)
        oldest = int(self.clock() - RETENTION_S) // 60
        self.totals = {key: row for key, row in self.totals.items() if key[0] >= oldest}
        payload = [[minute, service, row] for (minute, service), row in self.totals.items()]
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / self.name
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(partial, path)  # readers never see a half-written file

    def read(self, first_minute: int, last_minute: int) -> Rows:
        rows: Rows = {}
        stale_before = self.clock() - RETENTION_S
        for path in self.directory.glob("*.json"):
            try:
                if path.stat().st_mtime < stale_before:
                    path.unlink(missing_ok=True)  # a worker gone for longer than we keep data
                    continue
                payload = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # replaced or removed while we read it
            for minute, service, row in payload:
                if first_minute <= minute <= last_minute:
                    add_row(rows.setdefault((minute, service), new_row()), row)
        return rows


class TrafficRecorder:
    """Counts requests in memory and flushes them to a store from a background thread."""

    def __init__(self, store: TrafficStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._pending: Rows = {}
        self._lock = threading.Lock()
        self._flusher_pid = 0
        self._failing = False

    def record(
        self,
        service: str,
        status: int,
        duration_s: float,
        *,
        version: str = "",
        fallback: bool = False,
        circuit_open: bool = False,
        upstream_failed: bool = False,
    ) -> None:
        """Count one request of ``service`` (and ``version``); cheap enough for the request path."""
        bucket = FIRST_BUCKET + bisect.bisect_left(LATENCY_BOUNDS_MS, duration_s * 1000.0)
        series = f"{service}{VERSION_SEPARATOR}{version}" if version else service
        key = (int(self.clock()) // 60, series)
        with self._lock:
            row = self._pending.get(key)
            if row is None:
                row = self._pending[key] = new_row()
            row[REQUESTS] += 1
            if 400 <= status < 500:
                row[CLIENT_ERRORS] += 1
            elif status >= 500:
                row[SERVER_ERRORS] += 1
            row[bucket] += 1
            row[FALLBACKS] += fallback
            row[CIRCUIT_OPEN] += circuit_open
            row[UPSTREAM_FAILURES] += upstream_failed
        if self._flusher_pid != os.getpid():
            self._start_flusher()

    def flush(self) -> None:
        """Hand the pending counts to the store; on failure they are dropped (warned once per outage)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            self.store.add(pending)
        except Exception as exc:  # the dashboard is best effort; the gateway must go on
            if not self._failing:  # once per outage, not every few seconds
                logger.warning("dashboard traffic counts not stored: %s", type(exc).__name__)
            self._failing = True
            return
        if self._failing:
            logger.info("dashboard traffic counts stored again")
            self._failing = False

    def _start_flusher(self) -> None:
        # Started in the worker (after gunicorn's fork), once per process.
        self._flusher_pid = os.getpid()
        threading.Thread(target=self._flush_forever, name="dashboard-traffic", daemon=True).start()
        atexit.register(self.flush)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            self.flush()


@cache
def traffic_store() -> TrafficStore:
    """Return the store this deployment uses: Redis when configured, else local files."""
    from django.conf import settings

    if settings.REDIS_URL:
        prefix = settings.CACHES["default"].get("KEY_PREFIX") or "gw"
        return RedisTrafficStore(settings.REDIS_URL, f"{prefix}:traffic:")
    return FileTrafficStore(Path(settings.GATEWAY_TRAFFIC_DIR))


@cache
def traffic_recorder() -> TrafficRecorder:
    """Return this process's recorder."""
    return TrafficRecorder(traffic_store())


def record(
    service: str,
    status: int,
    duration_s: float,
    *,
    version: str = "",
    fallback: bool = False,
    circuit_open: bool = False,
    upstream_failed: bool = False,
) -> None:
    """Count one finished request of ``service`` (``""``: no route matched) and ``version``."""
    traffic_recorder().record(
        service,
        status,
        duration_s,
        version=version,
        fallback=fallback,
        circuit_open=circuit_open,
        upstream_failed=upstream_failed,
    )


def percentile_ms(row: Sequence[int], quantile: float) -> float | None:
    """Estimate a latency percentile from a row's buckets (linear within a bucket); None if empty."""
    buckets = row[FIRST_BUCKET : LAST_BUCKET + 1]
    total = sum(buckets)
    if total == 0:
        return None
    rank = quantile * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index == len(LATENCY_BOUNDS_MS):
                return float(LATENCY_BOUNDS_MS[-1])  # beyond the last bound: report the bound
            lower = LATENCY_BOUNDS_MS[index - 1] if index else 0
            upper = LATENCY_BOUNDS_MS[index]
            return round(lower + (upper - lower) * (rank - seen) / count, 1)
        seen += count
    return None


def traffic_summary(store: TrafficStore, now_s: float, minutes: int = 60) -> dict[str, object]:
    """Return the dashboard's per-service series over the last ``minutes`` (plus the current one).

    Per service: requests per minute, 5xx error rate, p50/p95 latency per minute, and
    totals; the current minute is partial, so the rate uses the seconds elapsed.
    """
    last = int(now_s) // 60
    first = last - minutes
    rows = _by_service(store.read(first, last))
    services = sorted({service for _, service in rows})
    series = []
    for service in services:
        per_minute = [rows.get((minute, service)) or new_row() for minute in range(first, last + 1)]
        total = new_row()
        for row in per_minute:
            add_row(total, row)
        recent = new_row()
        for row in per_minute[-6:]:
            add_row(recent, row)
        recent_s = 300 + (now_s - last * 60)  # five whole minutes and the current partial one
        series.append(
            {
                "service": service,
                "requests": [row[REQUESTS] for row in per_minute],
                "error_rate": [_ratio(row[SERVER_ERRORS], row[REQUESTS]) for row in per_minute],
                "p50_ms": [percentile_ms(row, 0.50) for row in per_minute],
                "p95_ms": [percentile_ms(row, 0.95) for row in per_minute],
                "totals": {
                    "requests": total[REQUESTS],
                    "requests_per_min": round(recent[REQUESTS] * 60 / recent_s, 2),
                    "error_rate": _ratio(total[SERVER_ERRORS], total[REQUESTS]),
                    "client_error_rate": _ratio(total[CLIENT_ERRORS], total[REQUESTS]),
                    "p50_ms": percentile_ms(total, 0.50),
                    "p95_ms": percentile_ms(total, 0.95),
                },
            }
        )
    series.sort(key=lambda item: -item["totals"]["requests"])  # type: ignore[index]  # built above
    return {
        "minutes": [minute * 60 for minute in range(first, last + 1)],
        "current_minute_elapsed_s": round(now_s - last * 60, 1),
        "services": series,
    }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _split(series: str) -> tuple[str, str]:
    service, _, version = series.partition(VERSION_SEPARATOR)
    return service, version


def _by_service(rows: Rows) -> Rows:
    """Sum the per-version rows of each service (the dashboard's charts are per service)."""
    summed: Rows = {}
    for (minute, series), row in rows.items():
        add_row(summed.setdefault((minute, _split(series)[0]), new_row()), row)
    return summed


def health_summary(store: TrafficStore, now_s: float, window_s: int = HEALTH_WINDOW_S) -> list[dict[str, object]]:
    """Return per service, and per version within it, the health of the last ``window_s`` seconds.

    Each item: ``requests``, ``error_rate`` (5xx share), ``p95_ms``, ``fallback_share``
    (answers served by the fallback URL), ``circuit_open`` (503s of an open breaker),
    ``upstream_failures``, ``breaker_open`` (an open-breaker answer in the last two
    minutes) and ``status``: ``failing`` (breaker open, or 5% or more 5xx), ``degraded``
    (any fallback or 5xx), ``ok``. Services sorted worst first, then by name.
    """
    last = int(now_s) // 60
    first = last - max(1, window_s // 60)
    rows = store.read(first, last)
    services: dict[str, dict[str, Row]] = {}
    recent: dict[tuple[str, str], int] = {}  # open-breaker answers in the last two minutes
    for (minute, series), row in rows.items():
        service, version = _split(series)
        if not service:
            continue  # no route matched: not a service's health
        add_row(services.setdefault(service, {}).setdefault(version or "default", new_row()), row)
        if minute >= last - 1:
            recent[(service, version or "default")] = recent.get((service, version or "default"), 0) + row[CIRCUIT_OPEN]
    result = []
    for service, versions in services.items():
        total = new_row()
        for row in versions.values():
            add_row(total, row)
        items = [
            _health(row, breaker_open=recent.get((service, version), 0) > 0) | {"version": version}
            for version, row in sorted(versions.items())
        ]
        summary = _health(total, breaker_open=any(item["breaker_open"] for item in items))
        result.append({"service": service, **summary, "versions": items})
    rank = {"failing": 0, "degraded": 1, "ok": 2}
    result.sort(key=lambda item: (rank[str(item["status"])], str(item["service"])))
    return result


def _health(row: Sequence[int], *, breaker_open: bool) -> dict[str, object]:
    requests = row[REQUESTS]
    error_rate = _ratio(row[SERVER_ERRORS], requests)
    fallback_share = _ratio(row[FALLBACKS], requests)
    if breaker_open or (error_rate or 0) >= 0.05:
        status = "failing"
    elif (error_rate or 0) > 0 or (fallback_share or 0) > 0:
        status = "degraded"
    else:
        status = "ok"
    return {
        "requests": requests,
        "error_rate": error_rate,
        "p95_ms": percentile_ms(row, 0.95),
        "fallback_share": fallback_share,
        "circuit_open": row[CIRCUIT_OPEN],
        "upstream_failures": row[UPSTREAM_FAILURES],
        "breaker_open": breaker_open,
        "status": status,
    }
