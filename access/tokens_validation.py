"""Field rules of token issuers and of scope lists (SPEC §3), shared by the models and the API.

The model fields and ``TokenIssuer.clean()`` call these, so the admin UI, the admin
REST API and config imports refuse the same input with the same messages.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

# What PyJWT verifies with ``cryptography``; ``none`` is never accepted.
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ALGORITHMS = (*ASYMMETRIC_ALGORITHMS, *HMAC_ALGORITHMS)
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*\Z")
CLAIM_RE = re.compile(r"^[A-Za-z0-9_:./-]{1,64}\Z")
# RFC 6749 §3.3 scope-token: printable ASCII except space, '"' and '\'.
SCOPE_RE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}\Z")
RATE_LIMIT_BY = ("application", "user")


def validate_algorithm(value: str) -> None:
    """Accept one JWS algorithm name the gateway verifies; refuse ``none`` and unknown names."""
    if value.lower() == "none":
        raise ValidationError("'none' is never accepted: a token must be signed.", code="alg_none")
    if value not in ALGORITHMS:
        raise ValidationError(f"'{value}' is not one of {', '.join(ALGORITHMS)}.", code="invalid_algorithm")


def validate_audience(value: str) -> None:
    """Accept a non-empty audience string without surrounding spaces."""
    if not value or value != value.strip() or len(value) > 255:
        raise ValidationError("An audience is 1-255 characters without surrounding spaces.", code="invalid_audience")


def validate_scope(value: str) -> None:
    """Accept one OAuth scope token (RFC 6749 §3.3): no spaces or quotes."""
    if not SCOPE_RE.match(value):
        raise ValidationError(
            f"'{value}' is not a scope: 1-128 printable characters, no space, '\"' or '\\'.", code="invalid_scope"
        )


def validate_env_name(value: str) -> None:
    """Accept the name of an environment variable (upper case, digits, '_'): never a secret itself."""
    if not ENV_NAME_RE.match(value or "") or len(value) > 128:
        raise ValidationError(
            "Give the name of an environment variable (A-Z, 0-9, '_'), not the secret itself.", code="invalid_env_name"
        )


def validate_claim_name(value: str) -> None:
    """Accept a claim name such as ``sub``, ``email`` or ``scp``."""
    if not CLAIM_RE.match(value or ""):
        raise ValidationError("A claim name is 1-64 letters, digits or '_:./-'.", code="invalid_claim")


def validate_issuer_url(value: str) -> None:
    """Accept an ``https://`` URL, or ``http://`` on a loopback host (JWKS and introspection)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValidationError("Enter a valid URL.", code="invalid_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Use an https:// URL (http:// only on loopback).", code="invalid_url_scheme")
    if parts.username or parts.password or parts.fragment:
        raise ValidationError("The URL carries no credentials or fragment.", code="invalid_url")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValidationError(
            "Use https:// : keys and token answers must not travel in clear text (http:// only on loopback).",
            code="insecure_url",
        )


def is_loopback_host(host: str) -> bool:
    """Return True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@deconstructible
class ItemsValidator:
    """Validate a JSON list of unique strings, each checked by the validator named ``item`` here."""

    def __init__(self, item: str) -> None:
        self.item = item

    def __call__(self, value: object) -> None:
        check: Callable[[str], None] = globals()[self.item]
        if not isinstance(value, list):
            raise ValidationError("Enter a JSON list of strings.", code="not_a_list")
        errors: list[ValidationError] = []
        for index, element in enumerate(value):
            if not isinstance(element, str):
                errors.append(ValidationError(f"Item {index}: not a string.", code="not_a_string"))
                continue
            try:
                check(element)
            except ValidationError as exc:
                errors.extend(ValidationError(f"Item {index}: {m}", code=exc.code) for m in exc.messages)
        if len(set(map(str, value))) != len(value):
            errors.append(ValidationError("Items must be unique.", code="duplicate_item"))
        if errors:
            raise ValidationError(errors)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ItemsValidator) and other.item == self.item

    def __hash__(self) -> int:
        return hash(self.item)


validate_algorithm_list = ItemsValidator("validate_algorithm")
validate_audience_list = ItemsValidator("validate_audience")
validate_scope_list = ItemsValidator("validate_scope")


def issuer_errors(
    *, jwks_url: str | None, secret_env: str | None, introspection_url: str | None, algorithms: list[str]
) -> dict[str, str]:
    """Return the cross-field problems of an issuer by field name (empty: consistent).

    Exactly one of ``jwks_url``, ``secret_env`` and ``introspection_url`` is set. A
    JWKS issuer lists asymmetric algorithms only and a secret issuer HS* only, so an
    HS256 token can never be checked against a public key (the algorithm confusion
    attack). JWT issuers list at least one algorithm.
    """
    sources = [name for name, value in (("jwks_url", jwks_url), ("secret_env", secret_env)) if value]
    if introspection_url:
        sources.append("introspection_url")
    if len(sources) != 1:
        message = "Set exactly one of JWKS URL, secret env or introspection URL."
        return {"jwks_url": message}
    algorithms = [a for a in algorithms if isinstance(a, str)]
    if sources == ["jwks_url"]:
        if not algorithms:
            return {"algorithms": "List the algorithms the issuer signs with, e.g. RS256."}
        wrong = [a for a in algorithms if a in HMAC_ALGORITHMS]
        if wrong:
            return {"algorithms": f"A JWKS issuer signs with public keys; {', '.join(wrong)} needs secret env."}
    if sources == ["secret_env"]:
        if not algorithms:
            return {"algorithms": "List the HS algorithms the secret signs with, e.g. HS256."}
        wrong = [a for a in algorithms if a not in HMAC_ALGORITHMS]
        if wrong:
            return {"algorithms": f"A shared secret signs with HS256/384/512 only, not {', '.join(wrong)}."}
    return {}
