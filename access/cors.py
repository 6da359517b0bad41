"""Browser clients: preflights and CORS response headers (SPEC §4.10). Interim; see issue 4."""

from __future__ import annotations

from django.http import HttpResponse

from routing.context import RequestContext


def answer_preflight(ctx: RequestContext) -> None:
    """Answer an OPTIONS preflight by setting ``ctx.response`` (204) or raise 403."""


def apply_cors(ctx: RequestContext, response: HttpResponse) -> None:
    """Replace the upstream's CORS headers with the gateway's, for listed origins only."""
