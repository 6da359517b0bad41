"""Request ids (SPEC §4.1): keep a well-formed client id, else generate one."""

from __future__ import annotations

import os
import re

from gateway_core.context import RequestContext

_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,128}\Z")


def request_id_for(client_value: str | None) -> str:
    """Return ``client_value`` when it is 1-128 chars of ``[A-Za-z0-9._-]``, else a new id."""
    if client_value and _VALID_ID.match(client_value):
        return client_value
    return os.urandom(16).hex()  # 128 random bits, as uuid4().hex without its cost


def assign_request_id(ctx: RequestContext) -> None:
    """Set ``ctx.request_id`` from ``X-Request-ID`` or a fresh one."""
    ctx.request_id = request_id_for(ctx.request.META.get("HTTP_X_REQUEST_ID"))
