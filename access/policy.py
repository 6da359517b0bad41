"""Who is calling and whether they may (SPEC §4.5). Interim pass-through; see issue 4."""

from __future__ import annotations

from routing.context import RequestContext


def identify_caller(ctx: RequestContext) -> None:
    """Verify ``X-API-Key`` and set ``ctx.api_key``/``ctx.application``; raise 401 GatewayError."""


def authorize_endpoint(ctx: RequestContext) -> None:
    """Find the whitelist entry allowing path + method; set ``ctx.entry``; raise 401/403."""


def authorize_version(ctx: RequestContext) -> None:
    """Refuse a resolved version the application or entry does not allow: 403."""
