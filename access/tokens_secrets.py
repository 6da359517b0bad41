"""Token issuers' secrets from the environment: HS keys and introspection client credentials.

Read when a snapshot is compiled, never per request and never from the database.
Each variable ``X`` may instead be given as ``X_FILE`` (trailing newline stripped),
as every secret of the gateway may. A variable that is set twice or unreadable is
reported by name (never by value) and treated as unset, so one mistake does not
stop a reload; tokens of that issuer then get 503 ``issuer_unavailable``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("access.tokens")

CLIENT_PREFIX = "GATEWAY_INTROSPECTION_CLIENT_"
MIN_HMAC_KEY_BYTES = 32


def env_secret(name: str) -> str | None:
    """Return env ``name`` or the content of the file named by ``name_FILE``; None when unusable."""
    value = os.environ.get(name)
    path = os.environ.get(f"{name}_FILE")
    if value is not None and path:
        logger.warning("both %s and %s_FILE are set; ignoring both", name, name)
        return None
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            logger.warning("%s_FILE: cannot read %s: %s", name, path, exc.strerror)
            return None
    return value or None


def issuer_secret(secret_env: str | None) -> bytes | None:
    """Return the HS key named by ``secret_env`` as bytes, or None when it is not set."""
    if not secret_env:
        return None
    value = env_secret(secret_env)
    if value is None:
        logger.warning("token issuer secret %s is not set in the environment", secret_env)
        return None
    secret = value.encode()
    if len(secret) < MIN_HMAC_KEY_BYTES:
        # RFC 7518 §3.2: an HS256 key is at least as long as the hash (32 bytes); say so, by name.
        logger.warning("token issuer secret %s is shorter than %d bytes", secret_env, MIN_HMAC_KEY_BYTES)
    return secret


def client_env_name(application_name: str) -> str:
    """Return ``GATEWAY_INTROSPECTION_CLIENT_<NAME>`` for an application (upper case, ``-`` as ``_``)."""
    return CLIENT_PREFIX + application_name.upper().replace("-", "_")


def client_credentials(application_name: str) -> tuple[str | None, str | None]:
    """Return the introspection ``(client_id, client_secret)`` of an application's issuers."""
    name = client_env_name(application_name)
    return env_secret(name), env_secret(f"{name}_SECRET")
