"""Publish a queue route's request as a Celery task, confirmed by the broker (SPEC §5). Interim."""

from __future__ import annotations

from django.http import HttpResponse

from gateway_project.errors import ErrorCode, GatewayError
from routing.context import RequestContext


def publish(ctx: RequestContext) -> HttpResponse:
    """Publish to ``ctx.version.queue`` and answer 202, or raise 503 queue_unavailable."""
    raise GatewayError(503, ErrorCode.QUEUE_UNAVAILABLE, "Queue publishing is not available.")
