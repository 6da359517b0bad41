"""Browser clients: preflights and CORS response headers (SPEC §4.10).

Origins come only from the applications' ``allowed_origins``: the gateway answers
preflights itself (a browser sends no key on one) and, on actual requests, replaces
whatever CORS headers the upstream sent with its own, for listed origins only.
"""

from __future__ import annotations

import re

from django.http import HttpResponse

from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError
from gateway_core.snapshot import CompiledApplication, Snapshot

MAX_AGE_S = 600
EXPOSED_HEADERS = "X-Request-ID, X-Service-Version, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def answer_preflight(ctx: RequestContext) -> None:
    """Answer an OPTIONS preflight by setting ``ctx.response`` (204) or raise 403.

    Not a preflight (not OPTIONS, or no ``Origin`` / ``Access-Control-Request-Method``):
    nothing to do. The 204 names the requested method and headers (``X-API-Key``
    always), is cacheable for ``MAX_AGE_S`` and varies on ``Origin``.
    """
    meta = ctx.request.META
    origin = meta.get("HTTP_ORIGIN")
    requested_method = meta.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD", "").strip().upper()
    if ctx.request.method != "OPTIONS" or not origin or not requested_method:
        return
    if not any(
        entry.allows_method(requested_method) and entry.pattern.matches(ctx.path)
        for application in applications_for_origin(ctx.snapshot, origin)
        for entry in application.entries
    ):
        raise GatewayError(
            403, ErrorCode.CORS_ORIGIN_NOT_ALLOWED, "This origin may not call this endpoint with this method."
        )
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Origin"] = origin
    response["Access-Control-Allow-Methods"] = requested_method
    response["Access-Control-Allow-Headers"] = _allowed_headers(meta.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", ""))
    response["Access-Control-Max-Age"] = str(MAX_AGE_S)
    response["Vary"] = "Origin"
    ctx.response = response


def apply_cors(ctx: RequestContext, response: HttpResponse) -> None:
    """Replace the upstream's CORS headers with the gateway's, for listed origins only.

    The gateway's own preflight answer (``ctx.response``) is left as it is. Any other
    response loses every ``Access-Control-*`` header it came with; it gets the allow
    and expose headers when the request's ``Origin`` is listed by the calling
    application or, on a public entry, by the entry's owner.
    """
    if response is ctx.response:
        return
    for name in [name for name in response.headers if name.lower().startswith("access-control-")]:
        del response[name]
    origin = ctx.request.META.get("HTTP_ORIGIN")
    if not origin or not _origin_listed(ctx, origin):
        return
    response["Access-Control-Allow-Origin"] = origin
    response["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    vary = response.get("Vary", "")
    if "origin" not in {part.strip().lower() for part in vary.split(",")}:
        response["Vary"] = f"{vary}, Origin" if vary else "Origin"


def applications_for_origin(snapshot: Snapshot, origin: str) -> tuple[CompiledApplication, ...]:
    """Return the active applications listing ``origin`` (compared exactly, case-insensitively)."""
    wanted = origin.lower()
    return tuple(
        application
        for application in snapshot.applications.values()
        if any(listed.lower() == wanted for listed in application.allowed_origins)
    )


def _origin_listed(ctx: RequestContext, origin: str) -> bool:
    wanted = origin.lower()
    candidates = [ctx.application]
    if ctx.entry is not None and ctx.entry.is_public:
        candidates.append(ctx.entry_owner)
    return any(
        application is not None and any(listed.lower() == wanted for listed in application.allowed_origins)
        for application in candidates
    )


def _allowed_headers(requested: str) -> str:
    # Header names only (RFC 9110 tokens): nothing else from the request is echoed.
    names = [name.strip() for name in requested.split(",") if _TOKEN.match(name.strip())]
    if not any(name.lower() == "x-api-key" for name in names):
        names.append("X-API-Key")
    return ", ".join(names)
