"""Per-minute rate limits per application or client IP (SPEC §4.6). Interim; see issue 4."""

from __future__ import annotations

from routing.context import RequestContext


def enforce_rate_limit(ctx: RequestContext) -> None:
    """Count the request against ``ctx.entry.rate_limit``; set ``ctx.rate``; raise 429."""
