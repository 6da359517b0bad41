"""Per-minute rate limits per application or client IP, shared through the cache (SPEC §4.6).

Counting follows django-ratelimit's core: fixed windows whose edges are staggered
per counted value (``core._get_window``), counters named by ``core._make_cache_key``
and kept ``EXPIRATION_FUDGE`` seconds past their window. The strategies sit behind
one interface, as Kong's local / redis policies do:

- ``RedisCounter``: with ``REDIS_URL`` set, the Redis behind the Django cache; one
  atomic ``INCR`` round trip counts exactly across every worker and node (``EXPIRE``
  follows a window's first hit).
- ``LocalCounter``: in-process, per worker: without ``REDIS_URL`` (the default cache
  is then the in-process one), and as the fallback while Redis is unreachable.
- ``CacheCounter``: any other Django cache (``add`` + ``incr``).

Redis down: with ``GATEWAY_RATELIMIT_FAIL_OPEN`` (default true) requests are counted
by ``LocalCounter`` per process (a warning is logged every 30 s at most, Redis is
retried after 5 s); with it false they are refused with 429 ``rate_limited``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from django.core.cache import BaseCache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django_ratelimit.core import EXPIRATION_FUDGE, _make_cache_key
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
    """Count in the Redis behind a Django ``RedisCache``: one INCR round trip per hit.

    INCR is atomic on the server, so counts are exact across every process and node.
    Connections use the cache's own settings (URL, database, password, timeouts) and
    its key prefix, but are kept here in a plain stack rather than checked out of
    redis-py's pool for every command: a checkout there probes the socket and records
    metrics, which costs more CPU than the round trip itself. Each call pops a
    connection and pushes it back once its reply has been read, so two greenlets (or
    threads) never share one; a connection that failed is closed, never kept.

    An INCR is sent again, once and on a new connection, only when a kept connection
    fails with a connection error: that is a server that closed it while it sat idle
    (a restart, an idle timeout) before reading the command. It is never resent after
    a timeout, when Redis may have counted it, nor when a new connection fails.

    Options (defaults in brackets): ``max_idle`` [32] connections kept open between
    calls; more are opened while more calls are in flight, and closed afterwards.
    """

    def __init__(self, cache: RedisCache, *, max_idle: int = 32) -> None:
        pool = cache._cache.get_client(None, write=True).connection_pool  # RedisCacheClient, the write server
        self._new_connection: Callable[[], Connection] = functools.partial(
            pool.connection_class, **pool.connection_kwargs
        )
        self._make_key = cache.make_key
        self.max_idle = max_idle
        self._idle: list[Connection] = []
        self._pid = os.getpid()
        self._commands: dict[str, list[bytes]] = {}  # counter name -> packed INCR of its Redis key

    def incr(self, cache_key: str, ttl_s: int) -> int:
        connection, kept = self._checkout()
        try:
            try:
                count = self._send_incr(connection, cache_key)
            except RedisConnectionError:
                if not kept:
                    raise
                connection.disconnect()
                connection = self._new_connection()
                count = self._send_incr(connection, cache_key)
            if count == 1:
                # The window is part of the key, so the TTL only frees memory: set it
                # with the window's first hit.
                connection.send_command("EXPIRE", self._make_key(cache_key), ttl_s, check_health=False)
                connection.read_response()
        except BaseException:
            # The reply may still be on its way: the connection cannot serve another call.
            connection.disconnect()
            raise
        if len(self._idle) < self.max_idle:
            self._idle.append(connection)
        else:
            connection.disconnect()
        return count

    def _checkout(self) -> tuple[Connection, bool]:
        """Return a connection and whether it was kept from an earlier call."""
        if self._pid != os.getpid():  # a forked child must not talk on its parent's sockets
            self._idle, self._pid = [], os.getpid()
        try:
            return self._idle.pop(), True
        except IndexError:
            return self._new_connection(), False  # connects on its first command

    def _send_incr(self, connection: Connection, cache_key: str) -> int:
        command = self._commands.get(cache_key)
        if command is None:
            if len(self._commands) > 10_000:  # old windows' names: bounded, rebuilt on demand
                self._commands.clear()
            # _make_cache_key's names are hex digests: nothing for make_and_validate_key to reject.
            command = self._commands[cache_key] = connection.pack_command("INCR", self._make_key(cache_key))
        connection.send_packed_command(command, check_health=False)
        return int(connection.read_response())


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


def shared_counter(cache: BaseCache) -> Counter:
    """Return the counting strategy for ``cache``.

    ``RedisCounter`` on Django's ``RedisCache``; ``LocalCounter`` on ``LocMemCache``,
    which is per process too but would pickle every count and take its lock twice per
    hit; ``CacheCounter`` on any other cache.
    """
    if isinstance(cache, RedisCache):
        return RedisCounter(cache)
    if isinstance(cache, LocMemCache):
        return LocalCounter()
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
    ``warn_every_s`` [30] between two warnings; ``clock`` [time.time] for windows.
    """

    def __init__(
        self,
        shared: Counter,
        *,
        fallback: Counter | None = None,
        fail_open: bool = True,
        retry_shared_after_s: float = 5.0,
        warn_every_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.shared = shared
        self.fallback = fallback or LocalCounter()
        self.fail_open = fail_open
        self.retry_shared_after_s = retry_shared_after_s
        self.warn_every_s = warn_every_s
        self.clock = clock
        self._shared_down_until = 0.0
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
        window = _Window(end=end, cache_key=_make_cache_key(GROUP, end, (limit, WINDOW_S), value, None))
        self._windows[value, limit] = window
        return window

    def _count(self, cache_key: str, ttl_s: int, now: float) -> int:
        if now >= self._shared_down_until:
            try:
                return self.shared.incr(cache_key, ttl_s)
            except Exception as exc:  # any cache client error: connection, timeout, protocol
                self._shared_down_until = now + self.retry_shared_after_s
                self._warn(exc, now)
                if not self.fail_open:
                    raise SharedCacheDown from exc
        elif not self.fail_open:
            raise SharedCacheDown
        return self.fallback.incr(cache_key, ttl_s)

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
        _limiter = RateLimiter(shared_counter(caches["default"]), fail_open=gateway_config().ratelimit_fail_open)
    return _limiter


def enforce_rate_limit(ctx: RequestContext) -> None:
    """Count the request against ``ctx.entry.rate_limit``; set ``ctx.rate``; raise 429.

    Keyed calls count per application, anonymous calls (public entries) per client
    IP, each per entry. The 429 carries ``Retry-After`` and the RateLimit-* headers.
    """
    entry = ctx.entry
    if entry is None or entry.rate_limit is None:
        return
    caller = f"app:{ctx.application.id}" if ctx.application is not None else f"ip:{ctx.client_ip}"
    value = f"{entry.id}:{caller}"
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


def rate_headers(decision: RateDecision) -> dict[str, str]:
    """Return the RateLimit-Limit / -Remaining / -Reset headers for ``decision``."""
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_s),
    }
