"""End users' bearer tokens: JWT verification, introspection and the verified-token memo (SPEC §4.5a).

``Authorization: Bearer <token>`` is the credential of a request without
``X-API-Key``. A JWT is matched to an active issuer by its ``iss`` claim and verified
with PyJWT against that issuer's JWKS keys (``access.jwks``) or HS secret; any other
token is introspected (``access.introspection``). A valid token calls as the
issuer's application, with the user from ``user_claim`` and the scopes from
``scope_claim``.

Signature checks and introspection do not run on every request: a verified token
is remembered under a keyed BLAKE2b digest of the token (the key derived from
``SECRET_KEY``), never the token itself, until its ``exp`` (introspection answers: ``exp`` or 60 s, whichever is
sooner), until its issuer's record changes in a new snapshot, or, for JWKS keys,
until the key that verified it leaves the issuer's key set. The memo is an LRU of
``memo_size`` tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

import jwt
from jwt.exceptions import ExpiredSignatureError, PyJWTError

from access.introspection import NEGATIVE_TTL_S, POSITIVE_TTL_S, Introspected, Introspector, http_post, scopes_of
from access.jwks import FetchFailed, IssuerUnavailable, JwksCache, http_fetch
from access.keys import BoundedLru
from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError
from gateway_core.snapshot import CompiledIssuer, Snapshot

logger = logging.getLogger("access.tokens")

AUTHORIZATION_META = "HTTP_AUTHORIZATION"
MAX_TOKEN_CHARS = 8192
MAX_USER_CHARS = 256
_MEMO_CONTEXT = b"gateway.access.tokens.memo.v1"  # domain separation for the memo's HMAC key


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    """Who a verified token names: issuer (hence application), user and scopes.

    ``valid_until`` (epoch seconds) ends its life in the memo; ``signing_key`` is the
    JWKS key that verified it (None for HS secrets and introspection).
    """

    issuer: CompiledIssuer
    user: str
    scopes: frozenset[str]
    valid_until: float
    signing_key: object | None = None


class _Introspection:
    """One introspection in progress; concurrent requests with the same token wait for it."""

    __slots__ = ("done", "failed", "found")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.found: Introspected | None = None
        self.failed = False


class TokenRefused(Exception):
    """A token that does not identify anyone: ``code`` is the SPEC error code, ``message`` the reason."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bearer_token(meta: Mapping[str, object]) -> str | None:
    """Return the token of ``Authorization: Bearer <token>``; None without a Bearer header.

    Raises TokenRefused for a Bearer header whose token is empty, too long or not
    the RFC 6750 b64token syntax.
    """
    value = meta.get(AUTHORIZATION_META)
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token or len(token) > MAX_TOKEN_CHARS or not _is_b64token(token):
        raise TokenRefused(ErrorCode.INVALID_TOKEN, "The bearer token is malformed.")
    return token


_B64TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"


def _is_b64token(token: str) -> bool:
    """RFC 6750 b64token: one or more of the characters above, then any ``=``.

    ``str.strip`` with the allowed characters leaves nothing of a valid token and stops
    at the first other character: one C loop, where a per-character test in Python cost
    more than the rest of a remembered token's check.
    """
    body = token.rstrip("=")
    return bool(body) and not body.strip(_B64TOKEN_CHARS)


class TokenVerifier:
    """Verify bearer tokens against a snapshot's issuers, each at most once while it stays valid.

    Options (defaults in brackets): ``memo_size`` [10000] tokens remembered (LRU);
    ``jwks`` and ``introspector`` (the HTTP sides, swapped in tests); ``clock``
    [time.time], the wall clock of ``exp``; ``introspection_wait_s`` [10]: how long a
    request waits for another request's introspection of the same token.
    """

    def __init__(
        self,
        secret_key: str,
        *,
        jwks: JwksCache,
        introspector: Introspector,
        memo_size: int = 10_000,
        clock: Callable[[], float] = time.time,
        introspection_wait_s: float = 10.0,
    ) -> None:
        # Keyed BLAKE2b is a MAC in one call: half the cost of copying a keyed HMAC per request.
        self._digest_key = hmac.new(secret_key.encode(), _MEMO_CONTEXT, hashlib.sha256).digest()
        self.jwks = jwks
        self.introspector = introspector
        self.clock = clock
        self._memo: BoundedLru[bytes, TokenIdentity] = BoundedLru(memo_size)
        self._inactive: BoundedLru[bytes, float] = BoundedLru(memo_size)  # opaque tokens said inactive, until
        self._issuers_seen: object = None
        self._introspecting: dict[bytes, _Introspection] = {}  # tokens being introspected now
        self.introspection_wait_s = introspection_wait_s  # how long a request waits for another's
        self._lock = threading.Lock()
        self.verifications = 0  # full checks run (signature or introspection): tests, benchmarks

    def check(self, token: str, snapshot: Snapshot) -> TokenIdentity:
        """Return the identity ``token`` proves; raise TokenRefused or IssuerUnavailable."""
        if snapshot.issuers is not self._issuers_seen:
            self._forget_changed(snapshot)
        digest = hashlib.blake2b(token.encode(), key=self._digest_key, digest_size=32).digest()
        now = self.clock()
        with self._lock:
            remembered = self._memo.get(digest)
        if remembered is not None:
            key = remembered.signing_key
            if now < remembered.valid_until and (key is None or self.jwks.still_has(remembered.issuer, key)):
                return remembered
            with self._lock:
                self._memo.pop(digest)
        identity = self._verify(token, digest, snapshot, now)
        with self._lock:
            self._memo.put(digest, identity)
        return identity

    def remembered(self) -> int:
        """Return how many verified tokens are remembered."""
        return len(self._memo)

    def _verify(self, token: str, digest: bytes, snapshot: Snapshot, now: float) -> TokenIdentity:
        self.verifications += 1
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except PyJWTError:
            return self._introspect(token, digest, snapshot, now)
        iss = unverified.get("iss")
        issuer = snapshot.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            if snapshot.introspection_issuers:
                return self._introspect(token, digest, snapshot, now)
            raise TokenRefused(ErrorCode.INVALID_TOKEN, "The token's issuer is not trusted.")
        return self._verify_jwt(token, header, issuer)

    def _verify_jwt(self, token: str, header: Mapping[str, object], issuer: CompiledIssuer) -> TokenIdentity:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            # Covers "none" and any algorithm the issuer does not sign with (HS256 on an RSA issuer).
            raise TokenRefused(ErrorCode.INVALID_TOKEN, "The token's algorithm is not accepted.")
        kid = header.get("kid")
        candidates: list[tuple[object, object | None]]
        if issuer.kind == "secret":
            if issuer.secret is None:
                raise IssuerUnavailable(issuer.issuer)
            candidates = [(issuer.secret, None)]
        else:
            keys = self.jwks.keys_for(issuer, kid if isinstance(kid, str) else None, alg)
            candidates = [(k.key, k) for k in keys]
        if not candidates:
            raise TokenRefused(ErrorCode.INVALID_TOKEN, "No key of the issuer matches the token.")
        claims: dict[str, object] | None = None
        used: object | None = None
        last_error = ""
        for key, signing_key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key=key,  # type: ignore[arg-type]  # a cryptography public key or the HS secret
                    algorithms=[alg],
                    audience=sorted(issuer.audiences) or None,
                    issuer=issuer.issuer,
                    leeway=issuer.leeway_s,
                    options={"require": ["exp", "iss"], "verify_aud": bool(issuer.audiences)},
                )
            except ExpiredSignatureError:
                raise TokenRefused(ErrorCode.EXPIRED_TOKEN, "The token has expired.") from None
            except PyJWTError as exc:
                last_error = type(exc).__name__
                continue
            used = signing_key
            break
        if claims is None:
            raise TokenRefused(ErrorCode.INVALID_TOKEN, f"The token is not valid ({_reason(last_error)}).")
        user = claims.get(issuer.user_claim)
        if (
            not isinstance(user, str | int)
            or isinstance(user, bool)
            or not str(user)
            or len(str(user)) > MAX_USER_CHARS
        ):
            raise TokenRefused(ErrorCode.INVALID_TOKEN, f"The token carries no usable '{issuer.user_claim}' claim.")
        exp = claims["exp"]
        return TokenIdentity(
            issuer=issuer,
            user=str(user),
            scopes=scopes_of(claims, issuer.scope_claim),
            valid_until=float(exp) + issuer.leeway_s,  # type: ignore[arg-type]  # PyJWT checked it is a number
            signing_key=used,
        )

    def _introspect(self, token: str, digest: bytes, snapshot: Snapshot, now: float) -> TokenIdentity:
        issuers = snapshot.introspection_issuers
        if not issuers:
            raise TokenRefused(ErrorCode.INVALID_TOKEN, "The bearer token is not a JWT of a trusted issuer.")
        with self._lock:
            inactive_until = self._inactive.get(digest)
        if inactive_until is not None and now < inactive_until:
            raise TokenRefused(ErrorCode.INVALID_TOKEN, "The token is not active.")
        found = self._introspect_shared(token, digest, issuers, now)
        if found is None:
            with self._lock:
                self._inactive.put(digest, now + NEGATIVE_TTL_S)
            raise TokenRefused(ErrorCode.INVALID_TOKEN, "The token is not active.")
        horizon = now + POSITIVE_TTL_S
        return TokenIdentity(
            issuer=found.issuer,
            user=found.user,
            scopes=found.scopes,
            valid_until=horizon if found.exp is None else min(found.exp, horizon),
        )

    def _introspect_shared(
        self, token: str, digest: bytes, issuers: tuple[CompiledIssuer, ...], now: float
    ) -> Introspected | None:
        """Introspect once for every concurrent request carrying the same token; raise IssuerUnavailable."""
        with self._lock:
            flight = self._introspecting.get(digest)
            leader = flight is None
            if flight is None:
                flight = self._introspecting[digest] = _Introspection()
        if not leader:
            if not flight.done.wait(self.introspection_wait_s) or flight.failed:
                raise IssuerUnavailable("introspection")
            return flight.found
        try:
            flight.found = self.introspector.introspect(token, issuers, now)
        except FetchFailed:
            flight.failed = True
            raise IssuerUnavailable("introspection") from None
        finally:
            with self._lock:
                del self._introspecting[digest]
            flight.done.set()
        return flight.found

    def _forget_changed(self, snapshot: Snapshot) -> None:
        # A new snapshot: keep tokens whose issuer record is unchanged, drop the rest.
        by_id = {i.id: i for i in snapshot.issuers.values()}
        by_id.update({i.id: i for i in snapshot.introspection_issuers})
        with self._lock:
            self._memo.retain(lambda identity: by_id.get(identity.issuer.id) == identity.issuer)
            self._issuers_seen = snapshot.issuers
        self.jwks.forget(lambda issuer_id: issuer_id in by_id)


def _reason(error_name: str) -> str:
    return {
        "InvalidAudienceError": "wrong audience",
        "InvalidSignatureError": "bad signature",
        "ImmatureSignatureError": "not valid yet",
        "InvalidIssuedAtError": "issued in the future",
        "MissingRequiredClaimError": "a required claim is missing",
        "InvalidIssuerError": "wrong issuer",
        "InvalidAlgorithmError": "algorithm not accepted",
    }.get(error_name, "cannot be verified")


# --- The request step ---------------------------------------------------------------------

_WWW_INVALID = 'Bearer error="invalid_token"'
_WWW_SCOPE = 'Bearer error="insufficient_scope"'


def identify_token(ctx: RequestContext, token: str) -> None:
    """Verify ``token``; set ``ctx.application``, ``ctx.user`` and ``ctx.scopes``.

    Raises 401 ``invalid_token`` / ``expired_token`` (with ``WWW-Authenticate``) and
    503 ``issuer_unavailable`` when a JWKS or introspection endpoint is needed and
    cannot be reached.
    """
    try:
        identity = token_verifier().check(token, ctx.snapshot)
    except TokenRefused as refused:
        raise GatewayError(401, refused.code, refused.message, {"WWW-Authenticate": _WWW_INVALID}) from None
    except IssuerUnavailable:
        raise GatewayError(
            503,
            ErrorCode.ISSUER_UNAVAILABLE,
            "The token issuer cannot be reached; retry shortly.",
            {"Retry-After": "5"},
        ) from None
    application = ctx.snapshot.applications.get(identity.issuer.application_id)
    if application is None:  # issuers of inactive applications are not compiled; this guards a partial record
        raise GatewayError(
            401, ErrorCode.INVALID_TOKEN, "The token's issuer is not trusted.", {"WWW-Authenticate": _WWW_INVALID}
        )
    ctx.application = application
    ctx.user = identity.user
    ctx.scopes = identity.scopes


def identify_bearer(ctx: RequestContext) -> bool:
    """Identify the caller from ``Authorization: Bearer``; return False when the request has none.

    A gateway that trusts no token issuer at all leaves ``Authorization`` alone: it is
    then an end-to-end header for the upstream's own use, as before issuers existed.
    """
    if not ctx.snapshot.issuers and not ctx.snapshot.introspection_issuers:
        return False
    try:
        token = bearer_token(ctx.request.META)
    except TokenRefused as refused:
        raise GatewayError(401, refused.code, refused.message, {"WWW-Authenticate": _WWW_INVALID}) from None
    if token is None:
        return False
    identify_token(ctx, token)
    return True


def authorize_scopes(ctx: RequestContext) -> None:
    """Refuse a token caller that lacks a scope the matched entry requires: 403 ``insufficient_scope``.

    Only bearer-token callers are subject to ``required_scopes`` (SPEC §3); key and
    anonymous callers pass.
    """
    entry = ctx.entry
    if entry is None or not entry.required_scopes or ctx.user is None:
        return
    missing = entry.required_scopes - ctx.scopes
    if missing:
        raise GatewayError(
            403,
            ErrorCode.INSUFFICIENT_SCOPE,
            f"The token lacks the scope(s) this endpoint requires: {', '.join(sorted(missing))}.",
            {"WWW-Authenticate": f'{_WWW_SCOPE}, scope="{" ".join(sorted(entry.required_scopes))}"'},
        )


@cache
def token_verifier() -> TokenVerifier:
    """Return the process's TokenVerifier (``SECRET_KEY`` and the knobs read once; tests call ``cache_clear``).

    ``GATEWAY_TOKEN_FETCH_TIMEOUT_MS`` [3000]: connect and read timeout of JWKS and
    introspection requests; ``GATEWAY_TOKEN_MEMO_SIZE`` [10000]: verified tokens
    remembered per process; ``GATEWAY_UPSTREAM_CA_BUNDLE`` [requests' bundle]: the CAs
    their https endpoints are verified against.
    """
    from django.conf import settings

    from gateway_core.conf import gateway_config

    timeout_s = _env_int("GATEWAY_TOKEN_FETCH_TIMEOUT_MS", 3000, minimum=1) / 1000.0
    ca_bundle = gateway_config().upstream_ca_bundle  # an internal CA signs internal issuers too
    return TokenVerifier(
        settings.SECRET_KEY,
        jwks=JwksCache(http_fetch(timeout_s, ca_bundle), wait_s=timeout_s + 1.0),
        introspector=Introspector(http_post(timeout_s, ca_bundle)),
        introspection_wait_s=timeout_s + 1.0,
        memo_size=_env_int("GATEWAY_TOKEN_MEMO_SIZE", 10_000, minimum=1),
    )


def _env_int(name: str, default: int, *, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        logger.warning("%s is not an integer; using %d", name, default)
        return default
    return max(minimum, value)
