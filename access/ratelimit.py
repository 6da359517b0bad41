"""Per-minute rate limits per application or client IP, shared through the cache (SPEC §4.6).

Counting follows django-ratelimit's core: fixed windows whose edges are staggered
per counted value (``core._get_window``), counters named by ``core._make_cache_key``
and kept ``EXPIRATION_FUDGE`` seconds past their window. Two strategies sit behind
one interface, as Kong's local / redis policies do:

- ``CacheCounter``: the Django cache. With ``REDIS_URL`` set that is Redis, and one
  atomic ``INCR`` round trip counts exactly across every worker and node (``EXPIRE``
  follows a window's first hit); otherwise the in-process cache (per worker).
- ``LocalCounter``: in-process; the fallback while the shared cache is unreachable.

Redis down: with ``GATEWAY_RATELIMIT_FAIL_OPEN`` (default true) requests are counted
by ``LocalCounter`` per process (a warning is logged every 30 s at most, Redis is
retried after 5 s); with it false they are refused with 429 ``rate_limited``.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from django.core.cache import BaseCache, caches
from django_ratelimit.core import EXPIRATION_FUDGE, _make_cache_key

from gateway_project.conf import gateway_config
from gateway_project.errors import ErrorCode, GatewayError
from routing.context import RateDecision, RequestContext

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
    """Count in a Django cache: one INCR round trip on Redis, add + incr elsewhere."""

    def __init__(self, cache: BaseCache) -> None:
        self.cache = cache
        self._redis_client: Any = None
        if type(cache).__name__ == "RedisCache":
            # One client for the process: building a redis.Redis per call costs more than the round trip.
            self._redis_client = cache._cache.get_client(None, write=True)  # type: ignore[attr-defined]  # RedisCacheClient

    def incr(self, cache_key: str, ttl_s: int) -> int:
        client = self._redis_client
        if client is not None:
            key = self.cache.make_key(cache_key)  # a hex digest: nothing to validate
            # INCR is atomic across every process and node. The window is part of the
            # key, so the TTL only frees memory: set it with the window's first hit.
            count = int(client.incr(key))
            if count == 1:
                client.expire(key, ttl_s)
            return count
        self.cache.add(cache_key, 0, ttl_s)
        try:
            return int(self.cache.incr(cache_key))
        except ValueError:  # expired between add and incr: start the window again
            self.cache.add(cache_key, 0, ttl_s)
            return int(self.cache.incr(cache_key))


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
        self._names: dict[tuple[str, int, int], str] = {}
        self._exhausted: dict[str, int] = {}  # counters over their limit -> window end

    def hit(self, value: str, limit: int) -> RateDecision:
        """Count one request for ``value`` and return the decision (``allowed`` or not).

        Raises ``SharedCacheDown`` when the shared cache fails and ``fail_open`` is off.
        """
        now = self.clock()
        end = window_end(value, WINDOW_S, now)
        reset_s = max(1, end - int(now))
        cache_key = self._cache_key(value, end, limit)
        if cache_key in self._exhausted:
            # A counter only grows within its window: once over, it stays over, so
            # a flood of refused requests costs no round trip.
            return RateDecision(limit=limit, remaining=0, reset_s=reset_s, allowed=False)
        count = self._count(cache_key, WINDOW_S + EXPIRATION_FUDGE, now)
        if count > limit:
            self._exhausted[cache_key] = end
        return RateDecision(limit=limit, remaining=max(0, limit - count), reset_s=reset_s, allowed=count <= limit)

    def _cache_key(self, value: str, end: int, limit: int) -> str:
        """Return django-ratelimit's counter name, computed once per counter and window."""
        memo_key = (value, end, limit)
        cache_key = self._names.get(memo_key)
        if cache_key is None:
            if len(self._names) > 10_000:
                self._names.clear()
                self._exhausted = {k: e for k, e in self._exhausted.items() if e >= end - WINDOW_S}
            cache_key = self._names[memo_key] = _make_cache_key(GROUP, end, (limit, WINDOW_S), value, None)
        return cache_key

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
        _limiter = RateLimiter(CacheCounter(caches["default"]), fail_open=gateway_config().ratelimit_fail_open)
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
