"""Token issuers' public keys: JWKS fetched over HTTP, cached and rotated (SPEC §4.5a).

Per issuer, the key set is fetched once and kept as long as the endpoint's
``Cache-Control: max-age`` says (at most 24 h, at least 1 s, 5 minutes without one).
Past that, requests keep using the cached keys while one background fetch replaces
them, so a refresh never waits on the request path; a JWKS endpoint that is down
leaves the cached keys in force (retried every 5 s). A token whose ``kid`` is not in
the set triggers one synchronous refetch, at most once per 30 s per issuer (a key
rotated in); concurrent fetches of one issuer share one HTTP request. Only the first
request for a new issuer waits for a fetch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from jwt import PyJWK
from jwt.exceptions import PyJWTError

from gateway_core.snapshot import CompiledIssuer

logger = logging.getLogger("access.tokens")

MAX_AGE_CAP_S = 24 * 3600
MAX_AGE_FLOOR_S = 1
DEFAULT_MAX_AGE_S = 300
UNKNOWN_KID_REFETCH_S = 30
RETRY_AFTER_FAILURE_S = 5
MAX_JWKS_BYTES = 1 << 20
_MAX_AGE_RE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
# The curve each ECDSA algorithm is verified with (RFC 7518 §3.4).
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class FetchFailed(Exception):
    """An issuer's endpoint could not be reached or did not answer usably (message names why)."""


class IssuerUnavailable(Exception):
    """No cached key covers the token and the issuer's JWKS endpoint cannot be reached."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A JWKS endpoint's answer: the body and its ``Cache-Control`` header."""

    body: bytes
    cache_control: str | None


Fetch = Callable[[str], Fetched]


@dataclass(frozen=True, slots=True, eq=False)
class SigningKey:
    """One public key of a JWKS: its ``kid``, type, curve, declared ``alg`` and the loaded key."""

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: object = field(repr=False)  # a cryptography public key, as PyJWK loaded it


def key_matches(alg: str, key: SigningKey) -> bool:
    """Return True when ``key`` is the key type ``alg`` is verified with (RSA for RS/PS, ...).

    HS* never matches a JWKS key: an HS256 token "signed" with an RSA public key (the
    algorithm confusion attack) finds no key at all. A key that declares its ``alg``
    verifies only that algorithm.
    """
    if key.alg is not None and key.alg != alg:
        return False
    if alg in _EC_CURVES:
        return key.kty == "EC" and key.crv == _EC_CURVES[alg]
    if alg == "EdDSA":
        return key.kty == "OKP"
    return alg[:2] in ("RS", "PS") and key.kty == "RSA"


@dataclass(slots=True)
class KeySet:
    """One issuer's parsed keys and the times that govern refetching them."""

    url: str
    keys: tuple[SigningKey, ...]
    expires_at: float
    by_json: dict[str, SigningKey] = field(default_factory=dict)
    ids: frozenset[int] = frozenset()
    forced_at: float = float("-inf")  # last refetch for an unknown kid
    forced_failed: bool = False
    retry_at: float = float("-inf")  # no background refresh before this (after a failure)

    def find(self, kid: str | None, alg: str) -> list[SigningKey]:
        """Return the keys that may verify a token with ``kid`` and ``alg``."""
        return [k for k in self.keys if (kid is None or k.kid == kid) and key_matches(alg, k)]


def parse_jwks(body: bytes, previous: KeySet | None) -> tuple[list[SigningKey], dict[str, SigningKey]]:
    """Parse a JWKS document into signature keys; reuse the previous object of an unchanged key.

    Keys that are not for signatures (``use`` other than ``sig``), symmetric (``oct``)
    or that PyJWT cannot load are skipped. Raises FetchFailed when the document
    itself is not a JWKS.
    """
    try:
        document = json.loads(body)
    except ValueError:
        raise FetchFailed("the JWKS answer is not JSON") from None
    items = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise FetchFailed("the JWKS answer has no 'keys' list")
    keys: list[SigningKey] = []
    by_json: dict[str, SigningKey] = {}
    for item in items:
        if not isinstance(item, dict) or item.get("kty") == "oct" or item.get("use", "sig") != "sig":
            continue
        canonical = json.dumps(item, sort_keys=True)
        jwk = previous.by_json.get(canonical) if previous is not None else None
        if jwk is None:
            try:
                loaded = PyJWK(item)
            except (PyJWTError, ValueError, TypeError, KeyError) as exc:
                logger.warning("skipping a JWKS key PyJWT cannot load: %s", type(exc).__name__)
                continue
            kid, alg, crv = item.get("kid"), item.get("alg"), item.get("crv")
            jwk = SigningKey(
                kid=kid if isinstance(kid, str) else None,
                kty=str(item.get("kty")),
                crv=crv if isinstance(crv, str) else None,
                alg=alg if isinstance(alg, str) else None,
                key=loaded.key,
            )
        keys.append(jwk)
        by_json[canonical] = jwk
    return keys, by_json


def max_age_s(cache_control: str | None) -> int:
    """Return how long a JWKS answer is kept: its ``max-age``, within [1 s, 24 h]; 300 s without one."""
    if cache_control:
        if re.search(r"\bno-(?:store|cache)\b", cache_control, re.IGNORECASE):
            return MAX_AGE_FLOOR_S
        found = _MAX_AGE_RE.search(cache_control)
        if found:
            return max(MAX_AGE_FLOOR_S, min(int(found.group(1)), MAX_AGE_CAP_S))
    return DEFAULT_MAX_AGE_S


class _Flight:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: KeySet | None = None
        self.error: str | None = None


class JwksCache:
    """The process's cache of issuers' key sets, by issuer id.

    Options: ``fetch`` (GET a URL, raise FetchFailed), ``clock`` [time.monotonic],
    ``spawn`` (run a background refresh) [a daemon thread; a greenlet under gevent],
    ``wait_s`` [10]: how long a request waits for another's fetch of the same issuer.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[Callable[[], None]], None] | None = None,
        wait_s: float = 10.0,
    ) -> None:
        self.fetch = fetch
        self.clock = clock
        self.spawn = spawn or _spawn_thread
        self.wait_s = wait_s
        self._sets: dict[str, KeySet] = {}
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        self.fetches = 0  # HTTP fetches started (tests, benchmarks)

    def keys_for(self, issuer: CompiledIssuer, kid: str | None, alg: str) -> Sequence[SigningKey]:
        """Return the keys that may verify a token of ``issuer`` with ``kid`` and ``alg``.

        An empty answer means no key covers the token (invalid). Raises
        IssuerUnavailable when a fetch this token needs fails.
        """
        now = self.clock()
        keyset = self._sets.get(issuer.id)
        fresh = keyset is None or keyset.url != issuer.jwks_url
        if fresh:
            keyset = self._fetch_shared(issuer)
        else:
            self._refresh_if_stale(issuer, keyset)
        found = keyset.find(kid, alg)
        if found or kid is None:
            return found
        if fresh:  # just fetched for this token: its kid counts as refetched
            keyset.forced_at = now
            return found
        if now - keyset.forced_at < UNKNOWN_KID_REFETCH_S:
            if keyset.forced_failed:
                raise IssuerUnavailable(issuer.issuer)
            return found
        keyset.forced_at = now
        try:
            refreshed = self._fetch_shared(issuer)
        except IssuerUnavailable:
            keyset.forced_failed = True
            raise
        refreshed.forced_at = now
        return refreshed.find(kid, alg)

    def still_has(self, issuer: CompiledIssuer, key: object) -> bool:
        """Return True while ``key`` is in the issuer's current key set (a remembered token stays valid).

        A stale set starts its background refresh here too, so a key withdrawn from
        the JWKS stops verifying remembered tokens once the refresh has run.
        """
        keyset = self._sets.get(issuer.id)
        if keyset is None:
            return False
        self._refresh_if_stale(issuer, keyset)
        return id(key) in keyset.ids

    def _refresh_if_stale(self, issuer: CompiledIssuer, keyset: KeySet) -> None:
        now = self.clock()
        if now >= keyset.expires_at and now >= keyset.retry_at:
            keyset.retry_at = now + RETRY_AFTER_FAILURE_S  # one background refresh at a time
            self.spawn(lambda: self._refresh_quietly(issuer))

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop the key sets of issuers ``keep`` refuses (deleted or changed issuers)."""
        with self._lock:
            for issuer_id in [i for i in self._sets if not keep(i)]:
                del self._sets[issuer_id]

    def _refresh_quietly(self, issuer: CompiledIssuer) -> None:
        # A failure is logged by the fetch; the cached keys stay in force.
        with contextlib.suppress(IssuerUnavailable):
            self._fetch_shared(issuer)

    def _fetch_shared(self, issuer: CompiledIssuer) -> KeySet:
        """Fetch the issuer's JWKS once for every concurrent caller; raise IssuerUnavailable."""
        with self._lock:
            flight = self._flights.get(issuer.id)
            leader = flight is None
            if flight is None:
                flight = self._flights[issuer.id] = _Flight()
        if not leader:
            flight.done.wait(self.wait_s)
            if flight.result is None:
                raise IssuerUnavailable(issuer.issuer)
            return flight.result
        try:
            flight.result = self._fetch(issuer)
        except FetchFailed as exc:
            flight.error = str(exc)
            previous = self._sets.get(issuer.id)
            if previous is not None:
                previous.retry_at = self.clock() + RETRY_AFTER_FAILURE_S
            logger.warning(
                "JWKS of issuer %s could not be fetched (%s); %s",
                issuer.issuer,
                exc,
                "keeping the cached keys" if previous is not None else "no keys cached",
            )
            raise IssuerUnavailable(issuer.issuer) from None
        finally:
            with self._lock:
                del self._flights[issuer.id]
            flight.done.set()
        return flight.result

    def _fetch(self, issuer: CompiledIssuer) -> KeySet:
        url = issuer.jwks_url or ""
        self.fetches += 1
        fetched = self.fetch(url)
        previous = self._sets.get(issuer.id)
        keys, by_json = parse_jwks(fetched.body, previous if previous is not None and previous.url == url else None)
        keyset = KeySet(
            url=url,
            keys=tuple(keys),
            expires_at=self.clock() + max_age_s(fetched.cache_control),
            by_json=by_json,
            ids=frozenset(id(k) for k in keys),
        )
        if previous is not None:
            keyset.forced_at = previous.forced_at
        with self._lock:
            self._sets[issuer.id] = keyset
        logger.info("JWKS of issuer %s loaded: %d key(s)", issuer.issuer, len(keys))
        return keyset


def _spawn_thread(run: Callable[[], None]) -> None:
    threading.Thread(target=run, name="jwks-refresh", daemon=True).start()


def http_fetch(timeout_s: float, ca_bundle: str = "") -> Fetch:
    """Return a JWKS fetcher: GET with ``timeout_s`` (connect and read), no redirects, ≤ 1 MiB.

    https is verified against ``ca_bundle`` (a PEM file) when given, else requests' bundle.
    """
    import requests

    session = requests.Session()
    session.trust_env = False  # no proxy or netrc from the environment for key material
    session.verify = ca_bundle or True

    def fetch(url: str) -> Fetched:
        try:
            with session.get(
                url, timeout=timeout_s, allow_redirects=False, stream=True, headers={"Accept": "application/json"}
            ) as response:
                if response.status_code != 200:
                    raise FetchFailed(f"HTTP {response.status_code}")
                body = response.raw.read(MAX_JWKS_BYTES + 1, decode_content=True)
                if len(body) > MAX_JWKS_BYTES:
                    raise FetchFailed("the JWKS answer is larger than 1 MiB")
                return Fetched(body=body, cache_control=response.headers.get("Cache-Control"))
        except requests.RequestException as exc:
            raise FetchFailed(type(exc).__name__) from None

    return fetch
