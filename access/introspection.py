"""RFC 7662 token introspection for opaque bearer tokens (SPEC §4.5a).

The token is POSTed as ``token=<token>&token_type_hint=access_token`` to each active
introspection issuer, authenticated with HTTP Basic from the environment
(``GATEWAY_INTROSPECTION_CLIENT_<NAME>`` / ``..._SECRET``, form-encoded first as RFC
6749 §2.3.1 asks), with a bounded timeout and no redirects. The first ``active: true``
answer decides. Positive answers are remembered by ``access.tokens`` until the
token's ``exp`` or 60 s, whichever is sooner; negative answers here for 5 s only.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote_plus

from access.jwks import FetchFailed
from gateway_core.snapshot import CompiledIssuer

logger = logging.getLogger("access.tokens")

POSITIVE_TTL_S = 60
NEGATIVE_TTL_S = 5
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Introspected:
    """An ``active: true`` answer: who, which scopes, and until when it may be remembered."""

    issuer: CompiledIssuer
    user: str
    scopes: frozenset[str]
    exp: float | None


# POST (url, form fields, Authorization header value or None) -> JSON answer; raises FetchFailed.
Post = Callable[[str, Mapping[str, str], str | None], Mapping[str, object]]


def basic_credentials(client_id: str | None, client_secret: str | None) -> str | None:
    """Return the ``Authorization: Basic`` value for the client, or None without a client id."""
    if not client_id:
        return None
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret or '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def scopes_of(claims: Mapping[str, object], scope_claim: str) -> frozenset[str]:
    """Return the scopes in ``scope_claim`` (space-separated string or list); ``scp`` is accepted too."""
    value = claims.get(scope_claim)
    if value is None and scope_claim == "scope":
        value = claims.get("scp")
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()


def audience_ok(issuer: CompiledIssuer, aud: object) -> bool:
    """Return True when ``aud`` (string or list) names one of the issuer's audiences (any when it lists none)."""
    if not issuer.audiences:
        return True
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    return any(isinstance(v, str) and v in issuer.audiences for v in values)


def answer_identity(issuer: CompiledIssuer, answer: Mapping[str, object], now: float) -> Introspected | None:
    """Return the identity in an introspection ``answer``, or None when it is not an active token for us."""
    if answer.get("active") is not True:
        return None
    exp = answer.get("exp")
    exp_s = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
    if exp_s is not None and exp_s <= now:
        return None
    if "aud" in answer and not audience_ok(issuer, answer.get("aud")):
        return None
    user = answer.get(issuer.user_claim) or answer.get("username") or answer.get("client_id")
    if not isinstance(user, str | int) or isinstance(user, bool) or len(str(user)) > 256:
        return None
    return Introspected(issuer=issuer, user=str(user), scopes=scopes_of(answer, issuer.scope_claim), exp=exp_s)


class Introspector:
    """Ask the introspection issuers about an opaque token.

    ``introspect`` returns the identity of an active token, None when every issuer
    answered that it is not active (remembered ``NEGATIVE_TTL_S``), and raises
    FetchFailed when no issuer said active and at least one could not be asked.
    """

    def __init__(self, post: Post) -> None:
        self.post = post
        self.requests = 0  # introspection requests sent (tests)

    def introspect(self, token: str, issuers: tuple[CompiledIssuer, ...], now: float) -> Introspected | None:
        failures: list[str] = []
        for issuer in issuers:
            if issuer.introspection_url is None:
                continue
            self.requests += 1
            try:
                answer = self.post(
                    issuer.introspection_url,
                    {"token": token, "token_type_hint": "access_token"},
                    basic_credentials(issuer.client_id, issuer.client_secret),
                )
            except FetchFailed as exc:
                logger.warning("introspection at issuer %s failed: %s", issuer.issuer, exc)
                failures.append(issuer.issuer)
                continue
            identity = answer_identity(issuer, answer, now)
            if identity is not None:
                return identity
        if failures:
            raise FetchFailed(", ".join(failures))
        return None


def http_post(timeout_s: float, ca_bundle: str = "") -> Post:
    """Return an introspection client: form POST with ``timeout_s``, no redirects, JSON answer ≤ 64 KiB.

    https is verified against ``ca_bundle`` (a PEM file) when given, else requests' bundle.
    """
    import requests

    session = requests.Session()
    session.trust_env = False  # no proxy or netrc from the environment for credentials
    session.verify = ca_bundle or True

    def post(url: str, form: Mapping[str, str], authorization: str | None) -> Mapping[str, object]:
        headers = {"Accept": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        try:
            with session.post(
                url, data=dict(form), headers=headers, timeout=timeout_s, allow_redirects=False, stream=True
            ) as response:
                if response.status_code != 200:
                    raise FetchFailed(f"HTTP {response.status_code}")
                body = response.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise FetchFailed(type(exc).__name__) from None
        if len(body) > MAX_ANSWER_BYTES:
            raise FetchFailed("the introspection answer is larger than 64 KiB")
        try:
            answer = json.loads(body)
        except ValueError:
            raise FetchFailed("the introspection answer is not JSON") from None
        if not isinstance(answer, dict):
            raise FetchFailed("the introspection answer is not a JSON object")
        return answer

    return post
