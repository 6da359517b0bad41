"""Per-minute rate limits per application or client IP, shared through the cache (SPEC §4.6).

Counting follows django-ratelimit's core: fixed windows whose edges are staggered
per counted value (as ``core._get_window`` does), counters named by a digest of the
group, rate, window and value (``counter_name``), kept ``EXPIRATION_FUDGE`` seconds past
their window. The strategies sit behind
one interface, as Kong's local / redis policies do:

- ``RedisCounter``: with ``REDIS_URL`` set, the Redis behind the Django cache; an
  atomic ``INCR`` per hit counts exactly across every worker and node (``EXPIRE``
  follows a window's first hit); the hits of concurrent requests share one round trip.
- ``NodeCounter``: without ``REDIS_URL``, a SQLite file shared by every worker of the
  machine (``GATEWAY_RATELIMIT_DB``), so a limit of N lets N requests through per
  window across the node's workers, not N per worker (SPEC §4.6).
- ``LocalCounter``: in-process, per worker: the fallback while the shared counter
  is unreachable.
- ``CacheCounter``: any other Django cache (``add`` + ``incr``).

Shared counter down: with ``GATEWAY_RATELIMIT_FAIL_OPEN`` (default true) requests are
counted by ``LocalCounter`` per process (a warning is logged every 30 s at most, the
shared counter is retried after 5 s); with it false they are refused with 429
``rate_limited``. A Redis that hangs costs one request per worker its socket timeout
(``GATEWAY_REDIS_TIMEOUT_MS``, 250): a request arriving while another one's count has
been unanswered for ``suspect_after_s`` (50 ms) does not wait behind it but counts
in process, and after a failure a single request per worker probes Redis again
while the others keep counting in process.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from django.core.cache import BaseCache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django_ratelimit.core import EXPIRATION_FUDGE
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway_core.conf import gateway_config
from gateway_core.context import RateDecision, RequestContext
from gateway_core.errors import ErrorCode, GatewayError

if TYPE_CHECKING:
    from redis.connection import Connection

logger = logging.getLogger("access.ratelimit")

WINDOW_S = 60  # rate_limit is per minute (SPEC §3)
GROUP = "gateway.entry"


def window_end(value: str, period_s: int, now: float) -> int:
    """Return the end (epoch seconds) of ``value``'s current window at ``now``.

    django-ratelimit's ``core._get_window`` with the clock passed in: windows are
    ``period_s`` long and their edges are offset by ``crc32(value) % period_s``, so
    the counters of different callers do not all reset at the same second.
    """
    ts = int(now)
    end = ts - (ts % period_s) + (zlib.crc32(value.encode()) % period_s)
    return end + period_s if end < ts else end


def counter_name(value: str, limit: int, window_end_s: int) -> str:
    """Return the cache key counting ``value``'s hits at ``limit`` per minute in the window ending then.

    A digest, so a counted value (an application id, a user, an IP) never appears in a
    cache key and any value fits Redis and memcached key rules.
    """
    raw = f"{GROUP}|{limit}/{WINDOW_S}s|{window_end_s}|{value}".encode()
    return "rl:" + hashlib.sha256(raw).hexdigest()


class Counter(Protocol):
    """A counting strategy: add one hit to ``cache_key`` and return the new count."""

    def incr(self, cache_key: str, ttl_s: int) -> int: ...


class CacheCounter:
    """Count in any Django cache: ``add`` then ``incr`` (atomic where the backend's incr is)."""

    def __init__(self, cache: BaseCache) -> None:
        self.cache = cache

    def incr(self, cache_key: str, ttl_s: int) -> int:
        self.cache.add(cache_key, 0, ttl_s)
        try:
            return int(self.cache.incr(cache_key))
        except ValueError:  # expired between add and incr: start the window again
            self.cache.add(cache_key, 0, ttl_s)
            return int(self.cache.incr(cache_key))


class RedisCounter:
    """Count in the Redis behind a Django ``RedisCache``: INCRs of concurrent requests share one round trip.

    INCR is atomic on the server, so counts are exact across every process and node.
    A process keeps one batch on the wire at a time: a call that arrives while one is
    out waits for it to come back, then the first of the waiting calls sends every INCR
    queued meanwhile as one pipeline on one write, and each call gets its own reply.
    Under load one send and one wait for the answer serve several requests (a round
    trip costs the process more CPU than Redis takes to count); a call alone is sent at
    once, as before. A batch that fails fails the calls queued behind it as well, so
    they fall back at once (``RateLimiter``) instead of each waiting for another
    timeout.

    Connections use the cache's own settings (URL, database, password, timeouts) and
    its key prefix, but one is kept here rather than checked out of redis-py's pool for
    every command: a checkout there probes the socket and records metrics, which costs
    more CPU than the round trip itself. A connection that failed is closed, never kept.

    A batch is sent again, once and on a new connection, only when the kept connection
    fails with a connection error before any reply was read: that is a server that
    closed it while it sat idle (a restart, an idle timeout). It is never resent after a
    timeout or a partial answer, when Redis may have counted it, nor when a new
    connection fails.
    """

    def __init__(self, cache: RedisCache) -> None:
        pool = cache._cache.get_client(None, write=True).connection_pool  # RedisCacheClient, the write server
        self._new_connection: Callable[[], Connection] = functools.partial(
            pool.connection_class, **pool.connection_kwargs
        )
        self._make_key = cache.make_key
        self._lock = threading.Lock()
        self._queue: list[_Call] = []  # calls waiting for the next batch, oldest first
        self._sending = False  # a batch is on the wire, or about to be
        self._kept: Connection | None = None
        self._pid = os.getpid()
        self._commands: dict[str, bytes] = {}  # counter name -> its packed INCR

    def incr(self, cache_key: str, ttl_s: int) -> int:
        call = _Call(cache_key, ttl_s)
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not talk on its parent's socket
                self._queue, self._sending, self._kept, self._pid = [], False, None, os.getpid()
            self._queue.append(call)
            if self._sending:
                call.done = threading.Event()
            else:
                self._sending = True
        if call.done is not None:
            call.done.wait()  # woken with its count, an error, or to send the next batch
        if call.count is None and call.error is None:
            self._send_queued()
        if call.error is not None:
            raise call.error
        return call.count  # type: ignore[return-value]  # set when error is not

    def _send_queued(self) -> None:
        """Send every queued call as one batch; then wake them and hand the wire to the next call."""
        with self._lock:
            batch, self._queue = self._queue, []
        failure: BaseException | None = None
        try:
            for call, count in zip(batch, self._round_trip(batch), strict=True):
                call.count = count
        except BaseException as exc:
            failure = exc
            raise
        finally:
            with self._lock:
                if failure is not None:
                    batch += self._queue  # never sent: they fall back now rather than time out again
                    self._queue = []
                    error = failure if isinstance(failure, Exception) else RedisConnectionError("count interrupted")
                    for call in batch:
                        call.error = error
                following = self._queue[0] if self._queue else None
                self._sending = following is not None
            for call in batch:
                if call.done is not None:
                    call.done.set()
            if following is not None and following.done is not None:
                following.done.set()  # it sends the calls queued meanwhile

    def _round_trip(self, batch: list[_Call]) -> list[int]:
        connection, kept = self._checkout()
        counts: list[int] = []
        try:
            try:
                self._send_incrs(connection, batch, counts)
            except RedisConnectionError:
                if not kept or counts:
                    raise
                connection.disconnect()
                connection = self._new_connection()
                self._send_incrs(connection, batch, counts)
            # The window is part of the key, so the TTL only frees memory: set it with
            # the window's first hit.
            firsts = [call for call, count in zip(batch, counts, strict=True) if count == 1]
            if firsts:
                expires = b"".join(
                    b"".join(connection.pack_command("EXPIRE", self._make_key(call.cache_key), call.ttl_s))
                    for call in firsts
                )
                connection.send_packed_command([expires], check_health=False)
                for _ in firsts:
                    connection.read_response()
        except BaseException:
            # A reply may still be on its way: the connection cannot serve another batch.
            connection.disconnect()
            raise
        self._kept = connection
        return counts

    def _checkout(self) -> tuple[Connection, bool]:
        """Return the connection to send on and whether it was kept from an earlier batch."""
        connection, self._kept = self._kept, None
        if connection is not None:
            return connection, True
        return self._new_connection(), False  # connects on its first command

    def _send_incrs(self, connection: Connection, batch: list[_Call], counts: list[int]) -> None:
        """Send the batch's INCRs in one write and append each reply to ``counts`` as it is read."""
        commands: list[bytes] = []
        for call in batch:
            command = self._commands.get(call.cache_key)
            if command is None:
                if len(self._commands) > 10_000:  # old windows' names: bounded, rebuilt on demand
                    self._commands.clear()
                # counter_name's names are hex digests: nothing for make_and_validate_key to reject.
                command = b"".join(connection.pack_command("INCR", self._make_key(call.cache_key)))
                self._commands[call.cache_key] = command
            commands.append(command)
        # One buffer: redis-py writes each item of a list with a sendall of its own.
        connection.send_packed_command([b"".join(commands)], check_health=False)
        for _ in batch:
            counts.append(int(connection.read_response()))  # noqa: PERF401 - one by one: a reply read counts even if a later one fails


class _Call:
    """One ``RedisCounter.incr``: its counter, then its count or error; ``done`` while it waits."""

    __slots__ = ("cache_key", "count", "done", "error", "ttl_s")

    def __init__(self, cache_key: str, ttl_s: int) -> None:
        self.cache_key = cache_key
        self.ttl_s = ttl_s
        self.count: int | None = None
        self.error: BaseException | None = None
        self.done: threading.Event | None = None


class LocalCounter:
    """Count in this process: a dict of ``cache_key -> (count, expires_at)``."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self._counts: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def incr(self, cache_key: str, ttl_s: int) -> int:
        now = self.monotonic()
        with self._lock:
            count, expires_at = self._counts.get(cache_key, (0, now + ttl_s))
            if expires_at <= now:
                count, expires_at = 0, now + ttl_s
            self._counts[cache_key] = (count + 1, expires_at)
            if len(self._counts) > 50_000:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
            return count + 1


class NodeCounter:
    """Count in a SQLite file shared by every process of this machine.

    One ``INSERT .. ON CONFLICT DO UPDATE .. RETURNING`` per hit, its own transaction,
    so counts are exact across the node's workers. The journal is WAL without fsync
    (``synchronous=OFF``): counters are not worth a disk flush, and a machine that
    crashed starts its windows afresh. Expired counters are deleted at most once a
    minute per process. Options (defaults in brackets): ``busy_timeout_s`` [1] waiting
    for another process's write; ``clock`` [time.time].
    """

    _UPSERT = (
        "INSERT INTO ratelimit_counter (name, count, expires_at) VALUES (?, 1, ?) "
        "ON CONFLICT (name) DO UPDATE SET "
        "count = CASE WHEN expires_at <= ? THEN 1 ELSE count + 1 END, "
        "expires_at = CASE WHEN expires_at <= ? THEN excluded.expires_at ELSE expires_at END "
        "RETURNING count"
    )

    def __init__(self, path: str, *, busy_timeout_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.clock = clock
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._purged_at = 0.0

    def incr(self, cache_key: str, ttl_s: int) -> int:
        now = self.clock()
        with self._lock:
            db = self._connection()
            (count,) = db.execute(self._UPSERT, (cache_key, now + ttl_s, now, now)).fetchone()
            if now - self._purged_at >= 60:
                self._purged_at = now
                db.execute("DELETE FROM ratelimit_counter WHERE expires_at <= ?", (now,))
        return int(count)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():  # a forked child opens its own
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")
            db.execute(
                "CREATE TABLE IF NOT EXISTS ratelimit_counter "
                "(name TEXT PRIMARY KEY, count INTEGER NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID"
            )
            self._db, self._pid = db, os.getpid()
        return self._db


def shared_counter(cache: BaseCache, node_db: str = "") -> Counter:
    """Return the counting strategy for ``cache``.

    ``RedisCounter`` on Django's ``RedisCache``; on ``LocMemCache`` (no Redis) a
    ``NodeCounter`` on ``node_db``, or without one a ``LocalCounter`` (per process,
    but without LocMemCache's pickling and double locking); ``CacheCounter`` on any
    other cache.
    """
    if isinstance(cache, RedisCache):
        return RedisCounter(cache)
    if isinstance(cache, LocMemCache):
        return NodeCounter(node_db) if node_db else LocalCounter()
    return CacheCounter(cache)


@dataclass(slots=True)
class _Window:
    """One counter's current window: its end (epoch s), its cache key, whether it is used up."""

    end: int
    cache_key: str
    exhausted: bool = False


class RateLimiter:
    """Decide whether one more hit for ``value`` fits ``limit`` per ``WINDOW_S``.

    Options (defaults in brackets): ``fail_open`` [GATEWAY_RATELIMIT_FAIL_OPEN, true];
    ``retry_shared_after_s`` [5] before trying the shared cache again after an error;
    ``suspect_after_s`` [0.05]: while a shared count has been unanswered this long,
    other requests count in process instead of waiting behind it; ``warn_every_s``
    [30] between two warnings; ``clock`` [time.time] for windows; ``monotonic``
    [time.monotonic] for waits.
    """

    def __init__(
        self,
        shared: Counter,
        *,
        fallback: Counter | None = None,
        fail_open: bool = True,
        retry_shared_after_s: float = 5.0,
        suspect_after_s: float = 0.05,
        warn_every_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.fallback = fallback or LocalCounter()
        self.fail_open = fail_open
        self.retry_shared_after_s = retry_shared_after_s
        self.suspect_after_s = suspect_after_s
        self.warn_every_s = warn_every_s
        self.clock = clock
        self.monotonic = monotonic
        self._shared_down_until = 0.0
        self._probing = False  # after a failure: one request at a time tries the shared counter
        self._inflight: dict[int, float] = {}  # call number -> when it was sent (oldest first)
        self._calls = itertools.count()
        self._warned_at = -1e18
        self._windows: dict[tuple[str, int], _Window] = {}  # (value, limit) -> its current window

    def hit(self, value: str, limit: int) -> RateDecision:
        """Count one request for ``value`` and return the decision (``allowed`` or not).

        Raises ``SharedCacheDown`` when the shared cache fails and ``fail_open`` is off.
        """
        now = self.clock()
        window = self._window(value, limit, int(now))
        reset_s = max(1, window.end - int(now))
        if window.exhausted:
            # A counter only grows within its window: once over, it stays over, so
            # a flood of refused requests costs no round trip.
            return RateDecision(limit=limit, remaining=0, reset_s=reset_s, allowed=False)
        count = self._count(window.cache_key, WINDOW_S + EXPIRATION_FUDGE, now)
        if count > limit:
            window.exhausted = True
        return RateDecision(limit=limit, remaining=max(0, limit - count), reset_s=reset_s, allowed=count <= limit)

    def _window(self, value: str, limit: int, ts: int) -> _Window:
        """Return ``value``'s window at ``ts``; its name is computed once per counter and window."""
        window = self._windows.get((value, limit))
        if window is not None and window.end - WINDOW_S < ts <= window.end:
            return window
        if len(self._windows) >= 10_000:
            # Bounded: a forgotten window is named again, and if it was used up, it costs
            # one more round trip (the shared count still refuses).
            self._windows.clear()
        end = window_end(value, WINDOW_S, ts)
        window = _Window(end=end, cache_key=counter_name(value, limit, end))
        self._windows[value, limit] = window
        return window

    def _count(self, cache_key: str, ttl_s: int, now: float) -> int:
        if self._may_use_shared(now):
            call = next(self._calls)
            self._inflight[call] = self.monotonic()
            probe = self._shared_down_until != 0.0
            self._probing = self._probing or probe
            try:
                count = self.shared.incr(cache_key, ttl_s)
            except Exception as exc:  # any cache client error: connection, timeout, protocol
                self._shared_down_until = now + self.retry_shared_after_s
                self._warn(exc, now)
                if not self.fail_open:
                    raise SharedCacheDown from exc
            else:
                self._shared_down_until = 0.0
                return count
            finally:
                del self._inflight[call]
                if probe:
                    self._probing = False
        elif not self.fail_open:
            raise SharedCacheDown
        return self.fallback.incr(cache_key, ttl_s)

    def _may_use_shared(self, now: float) -> bool:
        """Return False while the shared counter is down, being probed, or leaving a call unanswered."""
        if self._shared_down_until:
            return now >= self._shared_down_until and not self._probing
        if self._inflight:
            oldest_sent = next(iter(self._inflight.values()))
            return self.monotonic() - oldest_sent < self.suspect_after_s
        return True

    def _warn(self, exc: Exception, now: float) -> None:
        if now - self._warned_at < self.warn_every_s:
            return
        self._warned_at = now
        policy = "counting per process (fail open)" if self.fail_open else "refusing limited requests (fail closed)"
        logger.warning("Rate-limit cache unavailable (%s); %s", type(exc).__name__, policy)


class SharedCacheDown(Exception):
    """The shared rate-limit cache failed and the policy is to fail closed."""


_limiter: RateLimiter | None = None


def rate_limiter() -> RateLimiter:
    """Return the process's RateLimiter on the default cache (built on first use)."""
    global _limiter
    if _limiter is None:
        config = gateway_config()
        _limiter = RateLimiter(
            shared_counter(caches["default"], config.ratelimit_db), fail_open=config.ratelimit_fail_open
        )
    return _limiter


def enforce_rate_limit(ctx: RequestContext) -> None:
    """Count the request against ``ctx.entry.rate_limit``; set ``ctx.rate``; raise 429.

    Keyed calls count per application, bearer-token calls per application or, when
    the entry's ``rate_limit_by`` is ``user``, per token user; anonymous calls (public
    entries) per client IP; each per entry. The 429 carries ``Retry-After`` and the RateLimit-* headers.
    """
    entry = ctx.entry
    if entry is None or entry.rate_limit is None:
        return
    value = f"{entry.id}:{rate_counter(ctx)}"
    try:
        decision = rate_limiter().hit(value, entry.rate_limit)
    except SharedCacheDown:
        raise GatewayError(
            429,
            ErrorCode.RATE_LIMITED,
            "Rate limits cannot be checked right now; retry shortly.",
            {"Retry-After": "5"},
        ) from None
    ctx.rate = decision
    if not decision.allowed:
        raise GatewayError(
            429,
            ErrorCode.RATE_LIMITED,
            f"Rate limit of {entry.rate_limit} requests per minute exceeded.",
            rate_headers(decision) | {"Retry-After": str(decision.reset_s)},
        )


def rate_counter(ctx: RequestContext) -> str:
    """Name whom a request counts against: its token user (``rate_limit_by: user``), application, or client IP."""
    application = ctx.application
    if application is None:
        return f"ip:{ctx.client_ip}"
    entry = ctx.entry
    if entry is not None and entry.rate_limit_by == "user" and ctx.user is not None:
        return f"user:{application.id}:{ctx.user}"
    return f"app:{application.id}"


def rate_headers(decision: RateDecision) -> dict[str, str]:
    """Return the RateLimit-Limit / -Remaining / -Reset headers for ``decision``."""
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_s),
    }
