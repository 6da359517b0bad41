"""The request pipeline of ``/api/v1/...``: the ordered steps of SPEC §4, dispatch, finalize.

Each step is a function ``(ctx) -> None`` living in the module that owns its concept;
it raises GatewayError to refuse, or sets ``ctx.response`` to answer by itself (a
CORS preflight), which ends the steps. The order below is the SPEC's order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from access.cors import answer_preflight, apply_cors
from access.policy import authorize_endpoint, authorize_version, identify_caller
from access.ratelimit import enforce_rate_limit
from access.tokens import authorize_scopes
from gateway_core import logging as access_log
from gateway_core import metrics, server, snapshot, tracing
from gateway_core.client_ip import client_ip_for
from gateway_core.conf import gateway_config
from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError, error_response
from gateway_core.request_id import assign_request_id, request_id_for
from routing import proxy, reload, spans
from routing.bodies import reject_large_body
from routing.edge import check_edge
from routing.matcher import reject_unsafe_path, resolve_route
from routing.versions import check_pinned_version, choose_version, served_version_name

logger = logging.getLogger("gateway.pipeline")

Step = Callable[[RequestContext], None]

STEPS: tuple[Step, ...] = (
    assign_request_id,  # §4.1  X-Request-ID kept or generated
    check_edge,  # §4.2  400 bad_host / 405 TRACE, CONNECT / 501 WebSocket upgrade
    reject_unsafe_path,  # §4.2  400 bad_path
    reject_large_body,  # §4.9  413 payload_too_large (proxy.py also caps streamed bodies)
    answer_preflight,  # §4.10 204 preflight answered here / 403 cors_origin_not_allowed
    resolve_route,  # §4.3  404 route_not_found
    check_pinned_version,  # §4.4  404 version_not_found
    identify_caller,  # §4.5  401 invalid_api_key / expired_api_key, §4.5a invalid_token / expired_token
    authorize_endpoint,  # §4.5  401 missing_api_key / 403 service_not_allowed / endpoint_not_allowed
    authorize_scopes,  # §4.5a 403 insufficient_scope (bearer-token callers)
    choose_version,  # §4.4  weighted, among the versions the caller may use
    authorize_version,  # §4.5  403 version_not_allowed
    enforce_rate_limit,  # §4.6  429 rate_limited
)


def handle(request: HttpRequest) -> HttpResponse:
    """Run one ``/api/v1/...`` request through the steps, dispatch it and finalize the response."""
    config = gateway_config()
    ctx = RequestContext(request=request, snapshot=_EMPTY, started_at=time.perf_counter())
    if tracing.ENABLED:
        spans.request_start(request)
    try:
        ctx.client_ip = client_ip_for(
            request.META.get("REMOTE_ADDR", ""), request.META.get("HTTP_X_FORWARDED_FOR"), config.trusted_proxies
        )
        ctx.snapshot = serving_snapshot()
        for step in STEPS:
            step(ctx)
            if ctx.response is not None:
                break
        response = ctx.response if ctx.response is not None else dispatch(ctx)
    except GatewayError as err:
        response = err.to_response(request_id=ctx.request_id or _fallback_request_id(request))
    except snapshot.SnapshotUnavailable:
        logger.warning("no configuration loaded yet", extra={"request_id": ctx.request_id})
        response = error_response(
            503, ErrorCode.INTERNAL_ERROR, "The gateway has no configuration loaded yet.", ctx.request_id
        )
    except Exception as exc:
        # Type only: a message or traceback may quote request data or secrets.
        logger.error("unexpected error in the request pipeline: %s", type(exc).__name__, extra=_log_extra(ctx))
        response = error_response(500, ErrorCode.INTERNAL_ERROR, "Internal gateway error.", ctx.request_id)
    return finalize(ctx, response)


def serving_snapshot() -> snapshot.Snapshot:
    """Return the snapshot in force; the first request of a process without a watcher (runserver) loads it."""
    try:
        return snapshot.current()
    except snapshot.SnapshotUnavailable:
        return reload.load_now()


def dispatch(ctx: RequestContext) -> HttpResponse:
    """Forward to the HTTP upstream, or publish when the resolved target is a queue."""
    version = ctx.version
    if version is not None and version.queue is not None:
        from queues.producer import publish

        ctx.upstream = version.url
        return publish(ctx)
    return proxy.forward(ctx)


def finalize(ctx: RequestContext, response: HttpResponse) -> HttpResponse:
    """Add the gateway's response headers, then record metrics and the access log line."""
    try:
        if not ctx.request_id:
            ctx.request_id = _fallback_request_id(ctx.request)
        response.headers["X-Request-ID"] = ctx.request_id
        if ctx.version is not None:
            response.headers["X-Service-Version"] = served_version_name(ctx.version)
        rate = ctx.rate
        if rate is not None:
            response.headers["RateLimit-Limit"] = str(rate.limit)
            response.headers["RateLimit-Remaining"] = str(max(rate.remaining, 0))
            response.headers["RateLimit-Reset"] = str(max(rate.reset_s, 0))
        for name, value in ctx.response_headers.items():
            response.headers.setdefault(name, value)
        apply_cors(ctx, response)
        server.response_ready(ctx.request.META, response.status_code)  # close when the body was left unread
    except Exception as exc:
        logger.error("cannot finalize the response: %s", type(exc).__name__, extra=_log_extra(ctx))
    observers: tuple[Callable[[RequestContext, HttpResponse], None], ...] = (
        metrics.observe_request,
        access_log.log_access,
    )
    if spans.recording():
        observers += (spans.request_end,)  # an unsampled trace's server span has nothing to end
    for observer in observers:
        try:
            observer(ctx, response)
        except Exception as exc:
            logger.error("request observer failed: %s", type(exc).__name__, extra=_log_extra(ctx))
    return response


def _fallback_request_id(request: HttpRequest) -> str:
    return request_id_for(request.META.get("HTTP_X_REQUEST_ID"))


def _log_extra(ctx: RequestContext) -> dict[str, str]:
    return {"request_id": ctx.request_id, "path": ctx.path}


def _empty_snapshot() -> snapshot.Snapshot:
    from datetime import UTC, datetime

    return snapshot.Snapshot(
        version=0,
        loaded_at=datetime.fromtimestamp(0, tz=UTC),
        routes=(),
        routes_by_prefix={},
        applications={},
        keys={},
        public_entries=(),
    )


# Stands in until snapshot.current() returns, so the context is always complete.
_EMPTY = _empty_snapshot()
