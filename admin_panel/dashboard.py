"""The health dashboard in the Django admin: the page and the JSON it polls.

Health per service and version over the last five minutes (requests, 5xx rate, p95,
fallback share, open breakers) and the last hour's traffic, both from the per-minute
counts every gateway worker already keeps (``gateway_core.traffic``), summed across
workers and, with Redis, nodes.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache

from gateway_core.traffic import FileTrafficStore, health_summary, traffic_store, traffic_summary

logger = logging.getLogger(__name__)

REFRESH_S = 5  # how often the page polls; the workers flush their counts as often
QUEUE_STATS_TIMEOUT_S = 1.5
_QUEUE_STATS_TTL_S = 4.0  # several admins polling share one broker round trip

_queue_memo: list[tuple[float, list[dict[str, object]]]] = []


def queue_depths(now_s: float) -> list[dict[str, object]]:
    """Return ``queues.selectors.queue_stats()``, reused for a few seconds; [] if it fails."""
    if _queue_memo and now_s - _queue_memo[0][0] < _QUEUE_STATS_TTL_S:
        return _queue_memo[0][1]
    from queues.selectors import queue_stats

    try:
        stats = queue_stats(timeout_s=QUEUE_STATS_TIMEOUT_S)
    except Exception as exc:  # the page must render without the broker
        logger.warning("queue stats failed: %s", type(exc).__name__)
        stats = []
    _queue_memo[:] = [(now_s, stats)]
    return stats


def dashboard_payload(now_s: float | None = None) -> dict[str, object]:
    """Return everything the page draws: per-service series of the last hour and queue depths."""
    now_s = time.time() if now_s is None else now_s
    store = traffic_store()
    try:
        traffic = traffic_summary(store, now_s)
        traffic["health"] = health_summary(store, now_s)
        error = None
    except Exception as exc:  # Redis away: show the queues and say why the charts are empty
        logger.warning("dashboard traffic unavailable: %s", type(exc).__name__)
        traffic = {"minutes": [], "services": [], "health": []}
        error = f"traffic counts unavailable ({type(exc).__name__})"
    return {
        "generated_at": datetime.fromtimestamp(now_s, tz=UTC).isoformat(timespec="seconds"),
        "storage": "files (this machine)" if isinstance(store, FileTrafficStore) else "redis (all nodes)",
        "refresh_s": REFRESH_S,
        "error": error,
        **traffic,
        "queues": queue_depths(now_s),
    }


# Traffic per service is a view of the services: the viewer's and the editor's, not the key manager's.
REQUIRED_PERMISSION = "routing.view_serviceconfig"


def _require_permission(request: HttpRequest) -> None:
    if not request.user.has_perm(REQUIRED_PERMISSION):
        raise PermissionDenied


@never_cache
def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Render the dashboard page with its first data inline (no wait for the first poll)."""
    _require_permission(request)
    context = {
        **admin.site.each_context(request),
        "title": "Health dashboard",
        "payload": dashboard_payload(),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


@never_cache
def dashboard_data(request: HttpRequest) -> JsonResponse:
    """Answer the page's poll with the current payload."""
    _require_permission(request)
    return JsonResponse(dashboard_payload())
