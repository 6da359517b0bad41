"""Carry a new key's plaintext across one redirect to the page that shows it once (POST/redirect/GET).

Reloading the answer to the add form must not create a second key, so the form's POST
redirects to a one-time page. The plaintext crosses that redirect split in two
random shares (a one-time pad): the pad goes to the browser in a short-lived
HttpOnly cookie scoped to the one-time page, the other share (plaintext XOR pad) to
the server-side session. Neither share alone says anything about the key; the page
takes both, deletes both, and any later visit finds nothing to show. Nothing usable
is ever stored, logged or put in a URL.
"""

from __future__ import annotations

import base64
import secrets

from django.http import HttpRequest, HttpResponse

HANDOFF_TTL_S = 120  # the redirect follows at once; a stale share is worthless anyway
_SESSION_PREFIX = "gateway-key-handoff:"
_COOKIE_PREFIX = "gw_key_"


def _cookie_name(key_id: object) -> str:
    return _COOKIE_PREFIX + str(key_id).replace("-", "")


def key_handoff_put(request: HttpRequest, response: HttpResponse, *, key_id: object, plaintext: str, path: str) -> None:
    """Split ``plaintext`` between the session and a cookie on ``response`` scoped to ``path``."""
    data = plaintext.encode()
    pad = secrets.token_bytes(len(data))
    request.session[_SESSION_PREFIX + str(key_id)] = _b64(bytes(a ^ b for a, b in zip(data, pad, strict=True)))
    response.set_cookie(
        _cookie_name(key_id),
        _b64(pad),
        max_age=HANDOFF_TTL_S,
        path=path,
        httponly=True,
        samesite="Strict",
        secure=request.is_secure(),
    )


def key_handoff_take(request: HttpRequest, response: HttpResponse, *, key_id: object, path: str) -> str | None:
    """Return the plaintext once and forget both shares; None when it was shown already (or expired)."""
    share = request.session.pop(_SESSION_PREFIX + str(key_id), None)
    pad = request.COOKIES.get(_cookie_name(key_id))
    response.delete_cookie(_cookie_name(key_id), path=path, samesite="Strict")
    if not isinstance(share, str) or pad is None:
        return None
    try:
        share_bytes, pad_bytes = _unb64(share), _unb64(pad)
    except ValueError:
        return None
    if len(share_bytes) != len(pad_bytes):
        return None
    try:
        return bytes(a ^ b for a, b in zip(share_bytes, pad_bytes, strict=True)).decode()
    except UnicodeDecodeError:
        return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode())
