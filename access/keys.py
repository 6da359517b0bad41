"""API key format, argon2id/bcrypt verification and the verified-key memo (SPEC §3, §4.5).

A presented key is checked against the snapshot's ``CompiledKey`` for its prefix.
Argon2 runs at most once per distinct presented key while that key's compiled record
stays the same: successes and failures are remembered under an HMAC-SHA256 digest of
the presented key (never the plaintext), and a record that changes (re-hashed,
revoked, moved, expiry edited) or disappears is forgotten on the next snapshot swap.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Generic, TypeVar

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

if TYPE_CHECKING:
    from gateway_core.snapshot import CompiledKey

logger = logging.getLogger("access.keys")

PREFIX_MARK = "gk_"
SECRET_BYTES = 32
_hasher = PasswordHasher()  # argon2id with argon2-cffi's RFC 9106 low-memory defaults
_MEMO_CONTEXT = b"gateway.access.keys.memo.v1"  # domain separation for the memo's HMAC key

_verifications = 0
_verifications_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: the plaintext is shown once, only the hash is kept."""

    prefix: str
    plaintext: str
    hash: str


def key_generate() -> NewKey:
    """Generate ``<key_prefix>.<secret>`` with a 32-byte secret and its argon2id hash."""
    prefix = PREFIX_MARK + secrets.token_hex(6)
    secret = secrets.token_urlsafe(SECRET_BYTES)  # never contains '.'
    return NewKey(prefix=prefix, plaintext=f"{prefix}.{secret}", hash=_hasher.hash(secret))


def key_split(presented: str) -> tuple[str, str] | None:
    """Split a presented key into ``(prefix, secret)``; None when it is malformed."""
    prefix, dot, secret = presented.partition(".")
    if not dot or not prefix or not secret or len(presented) > 256:
        return None
    return prefix, secret


def prefix_shaped(prefix: str) -> bool:
    """Return True for a string shaped like a key prefix (``gk_`` + 12 hex digits): safe to log."""
    return (
        len(prefix) == len(PREFIX_MARK) + 12
        and prefix.startswith(PREFIX_MARK)
        and all(c in "0123456789abcdef" for c in prefix[len(PREFIX_MARK) :])
    )


def hash_verify(stored_hash: str, secret: str) -> bool:
    """Return True when ``secret`` matches an argon2id (or legacy bcrypt) hash. CPU-heavy."""
    global _verifications
    with _verifications_lock:
        _verifications += 1
    if stored_hash.startswith("$argon2"):
        try:
            return _hasher.verify(stored_hash, secret)
        except (VerificationError, InvalidHashError):
            return False
    if stored_hash.startswith(("$2a$", "$2b$", "$2y$")):
        try:
            return bcrypt.checkpw(secret.encode(), stored_hash.encode())
        except ValueError:
            return False
    return False


def verification_count() -> int:
    """Return how many hash verifications this process has run (tests and benchmarks)."""
    return _verifications


class KeyOutcome(enum.Enum):
    """What checking a presented key found."""

    VALID = "valid"
    INVALID = "invalid"  # malformed, unknown prefix, wrong secret, revoked
    EXPIRED = "expired"  # right secret, past ``expires_at``


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """The outcome of one check; ``key`` is set for VALID and EXPIRED.

    ``retry_after_s`` is set when the client was refused without a verification
    because it failed too often (see ``KeyVerifier``).
    """

    outcome: KeyOutcome
    key: CompiledKey | None = None
    retry_after_s: int | None = None


_INVALID = KeyVerdict(KeyOutcome.INVALID)

K = TypeVar("K")
V = TypeVar("V")


class BoundedLru(Generic[K, V]):
    """A size-bounded mapping that evicts the least recently used item. Not thread-safe."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def retain(self, keep: Callable[[V], bool]) -> None:
        """Drop every item whose value ``keep`` refuses."""
        for key in [k for k, v in self._items.items() if not keep(v)]:
            del self._items[key]

    def __len__(self) -> int:
        return len(self._items)


@dataclass(slots=True)
class _FailureWindow:
    started_at: float
    failures: int
    pending: int = 0  # verifications in flight
    warned: bool = False


Offload = Callable[[Callable[[str, str], bool], str, str], bool]


def default_offload() -> Offload:
    """Return a runner for hash verification off the event loop.

    Under gevent (monkey-patched threads are greenlets) a verification on the loop
    would freeze every connection of the worker for ~100 ms, so it runs in a small
    native thread pool; argon2-cffi and bcrypt release the GIL while hashing. Without
    gevent a real thread pool of the same size bounds the CPU spent on first checks.
    """
    workers = 2
    try:
        from gevent import monkey

        patched = monkey.is_module_patched("threading")
    except ImportError:  # pragma: no cover - gevent is a runtime dependency
        patched = False
    if patched:
        from gevent.threadpool import ThreadPool

        pool = ThreadPool(workers)
        return lambda fn, stored, secret: bool(pool.apply(fn, (stored, secret)))
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="key-verify")
    return lambda fn, stored, secret: executor.submit(fn, stored, secret).result()


class _InFlight:
    """One verification in progress; concurrent checks of the same key wait for it."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class KeyVerifier:
    """Check presented API keys against compiled key records, verifying each at most once.

    Options (defaults in brackets):
    - ``memo_size`` [10000]: verified keys remembered; ``failure_size`` [10000]: wrong keys
      remembered (LRU), so repeating a wrong key costs no hashing.
    - ``failure_budget`` [10] per ``failure_window_s`` [60]: verifications a client (IP)
      may fail *for one key prefix*; past it, that client's keys of that prefix not
      already remembered are refused unhashed until the window ends. One guesser
      behind a shared address (NAT, an untrusted load balancer) never locks out a
      valid key of another prefix from the same address (SPEC §4.5).
    - ``client_failure_budget`` [100] per window: failed verifications a client may
      cause over all prefixes, which caps the argon2 CPU one address can make the
      gateway spend (a guesser walking through many real prefixes).
    - ``now``: the wall clock for expiry; ``monotonic``: the clock for failure windows.
    """

    def __init__(
        self,
        secret_key: str,
        *,
        offload: Offload | None = None,
        memo_size: int = 10_000,
        failure_size: int = 10_000,
        failure_budget: int = 10,
        client_failure_budget: int = 100,
        failure_window_s: float = 60.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # Only a derived key is kept; the digest it makes cannot be reversed to a key.
        self._digest_key = hmac.new(secret_key.encode(), _MEMO_CONTEXT, hashlib.sha256).digest()
        self._memo_mac = hmac.new(self._digest_key, digestmod=hashlib.sha256)
        self._offload = offload
        # Verified keys are remembered as their VALID verdict, which each check returns as is.
        self._verified: BoundedLru[bytes, KeyVerdict] = BoundedLru(memo_size)
        self._failed: BoundedLru[bytes, CompiledKey] = BoundedLru(failure_size)
        self._clients: BoundedLru[str, _FailureWindow] = BoundedLru(failure_size)
        self._inflight: dict[bytes, _InFlight] = {}
        self._keys_seen: Mapping[str, CompiledKey] | None = None
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)  # a verification finished
        self.failure_budget = failure_budget
        self.client_failure_budget = client_failure_budget
        self.failure_window_s = failure_window_s
        self.now = now
        self.monotonic = monotonic

    def check(self, presented: str, keys: Mapping[str, CompiledKey], client: str) -> KeyVerdict:
        """Check ``presented`` against ``keys`` (the snapshot's, by prefix) for ``client``.

        Unknown prefixes, malformed and revoked keys are refused without hashing; a
        key remembered as verified (or as wrong) for an unchanged record is answered
        from memory; anything else is verified once, off the event loop.
        """
        if keys is not self._keys_seen:
            self._forget_changed(keys)
        parts = key_split(presented)
        if parts is None:
            return _INVALID
        prefix, secret = parts
        key = keys.get(prefix)
        if key is None or not key.is_active:
            return _INVALID
        digest = self._digest(presented)
        with self._lock:
            valid = self._verified.get(digest)
            # The remembered record is this very object unless the snapshot was swapped.
            if valid is not None and valid.key is not key and valid.key != key:
                valid = None
            known_wrong = valid is None and self._failed.get(digest) == key
        if known_wrong:
            return _INVALID
        if valid is None:
            retry_after_s = self._admit(client, prefix)
            if retry_after_s is not None:
                return KeyVerdict(KeyOutcome.INVALID, retry_after_s=retry_after_s)
            verified = False
            try:
                verified = self._verify_once(digest, key, secret)
            finally:
                self._settle(client, key.prefix, failed=not verified)
            if not verified:
                return _INVALID
            valid = KeyVerdict(KeyOutcome.VALID, key)
            if not self._expired(key):
                logger.info("API key %s verified", key.prefix)
        if self._expired(key):
            return KeyVerdict(KeyOutcome.EXPIRED, key)
        return valid

    def _expired(self, key: CompiledKey) -> bool:
        return key.expires_at is not None and key.expires_at <= self.now()

    def _digest(self, presented: str) -> bytes:
        """Return HMAC-SHA256(derived key, ``presented``): the memo's name for a presented key."""
        # The MAC was keyed once in __init__; copying it skips deriving the key pads per check.
        mac = self._memo_mac.copy()
        mac.update(presented.encode())
        return mac.digest()

    def remembered(self) -> tuple[int, int]:
        """Return how many keys are remembered as ``(verified, failed)``."""
        return len(self._verified), len(self._failed)

    def _verify_once(self, digest: bytes, key: CompiledKey, secret: str) -> bool:
        with self._lock:
            flight = self._inflight.get(digest)
            leader = flight is None
            if flight is None:
                flight = self._inflight[digest] = _InFlight()
        if not leader:
            flight.done.wait(timeout=30)
            return flight.ok
        try:
            if self._offload is None:
                self._offload = default_offload()
            flight.ok = self._offload(hash_verify, key.hash, secret)
        finally:
            with self._lock:
                if flight.ok:
                    self._verified.put(digest, KeyVerdict(KeyOutcome.VALID, key))
                else:
                    self._failed.put(digest, key)
                del self._inflight[digest]
            flight.done.set()
        return flight.ok

    def _forget_changed(self, keys: Mapping[str, CompiledKey]) -> None:
        # A new snapshot: keep what still holds for records that did not change, so an
        # unrelated edit costs no re-verification; drop revoked, deleted, changed keys.
        def unchanged(record: CompiledKey | None) -> bool:
            return record is not None and keys.get(record.prefix) == record

        with self._lock:
            self._verified.retain(lambda verdict: unchanged(verdict.key))
            self._failed.retain(unchanged)
            self._keys_seen = keys

    def _windows(self, client: str, prefix: str, now: float) -> tuple[tuple[_FailureWindow, int], ...]:
        """Return the client's window for ``prefix`` and its window over all prefixes, with their budgets."""
        windows = []
        for name, budget in ((f"{client} {prefix}", self.failure_budget), (client, self.client_failure_budget)):
            window = self._clients.get(name)
            if window is None or now - window.started_at >= self.failure_window_s:
                window = _FailureWindow(started_at=now, failures=0)
                self._clients.put(name, window)
            windows.append((window, budget))
        return tuple(windows)

    def _admit(self, client: str, prefix: str) -> int | None:
        """Reserve one verification for ``client`` and ``prefix``; return seconds to wait when over budget.

        Verifications in flight count against the budgets, so concurrent guesses cannot
        slip past them before their failures are known: a check that would exceed one
        waits for those in flight to settle (a burst of valid keys from one address
        only queues), and is refused once the failures alone reach a budget.
        """
        give_up_at = self.monotonic() + 30.0
        with self._settled:
            while True:
                now = self.monotonic()
                windows = self._windows(client, prefix, now)
                spent = [window for window, budget in windows if window.failures >= budget]
                if spent or now >= give_up_at:
                    started_at = max(window.started_at for window in spent) if spent else now
                    return max(1, int(started_at + self.failure_window_s - now + 0.999))
                if all(window.failures + window.pending < budget for window, budget in windows):
                    for window, _ in windows:
                        window.pending += 1
                    return None
                self._settled.wait(timeout=give_up_at - now)

    def _settle(self, client: str, prefix: str, *, failed: bool) -> None:
        warn = False
        with self._settled:
            self._settled.notify_all()
            for name, budget in ((f"{client} {prefix}", self.failure_budget), (client, self.client_failure_budget)):
                window = self._clients.get(name)
                if window is None:
                    continue
                window.pending = max(0, window.pending - 1)
                if failed:
                    window.failures += 1
                    if window.failures >= budget and not window.warned:
                        window.warned = warn = True
        if not failed:
            return
        logger.warning("API key verification failed for prefix %s from %s", prefix, client)
        if warn:
            logger.warning(
                "Client %s reached its key verification failure budget (prefix %s); refusing unverified keys for %.0fs",
                client,
                prefix,
                self.failure_window_s,
            )


@cache
def key_verifier() -> KeyVerifier:
    """Return the process's KeyVerifier (SECRET_KEY read once; tests call ``cache_clear``)."""
    from django.conf import settings

    return KeyVerifier(settings.SECRET_KEY)
