"""GET /api/v1/tasks/<task_id>: a task's status, shown to the application that created it."""

from __future__ import annotations

import json
import re
import time

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from access.cors import MAX_AGE_S, applications_for_origin, apply_cors
from access.policy import identify_caller
from gateway_core import snapshot
from gateway_core.client_ip import client_ip_for
from gateway_core.conf import gateway_config
from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError, error_response
from gateway_core.logging import log_access
from gateway_core.metrics import observe_request
from gateway_core.request_id import assign_request_id, request_id_for
from queues.models import TaskStatus
from queues.selectors import task_status_get
from routing.pipeline import serving_snapshot

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


@csrf_exempt  # an API answered with JSON errors (405 for anything but GET), not a form
def task_status(request: HttpRequest, task_id: str) -> HttpResponse:
    """Answer the task's status JSON, or the SPEC error (401, 404, 405)."""
    started_at = time.perf_counter()
    try:
        current = serving_snapshot()
    except snapshot.SnapshotUnavailable:
        # No configuration was ever loaded, so keys cannot be checked yet.
        request_id = request_id_for(request.META.get("HTTP_X_REQUEST_ID"))
        response = error_response(
            503, ErrorCode.INTERNAL_ERROR, "The gateway has no configuration loaded yet.", request_id
        )
        response["X-Request-ID"] = request_id
        return response
    ctx = RequestContext(request=request, snapshot=current, started_at=started_at)
    assign_request_id(ctx)
    ctx.path = ctx.raw_path = request.path
    ctx.client_ip = client_ip_for(
        request.META.get("REMOTE_ADDR", ""), request.META.get("HTTP_X_FORWARDED_FOR"), gateway_config().trusted_proxies
    )
    try:
        ctx.response = _answer_preflight(ctx)
        if ctx.response is not None:
            response = ctx.response
        elif request.method not in ("GET", "HEAD"):
            raise GatewayError(
                405, ErrorCode.METHOD_NOT_ALLOWED, "Task status accepts GET only.", headers={"Allow": "GET, HEAD"}
            )
        else:
            identify_caller(ctx)
            task = _visible_task(ctx, task_id)
            response = HttpResponse(_render(task), content_type="application/json")
            response["Cache-Control"] = "no-store"
    except GatewayError as err:
        response = err.to_response(request_id=ctx.request_id)
    apply_cors(ctx, response)
    response["X-Request-ID"] = ctx.request_id
    log_access(ctx, response)
    observe_request(ctx, response)
    return response


def _answer_preflight(ctx: RequestContext) -> HttpResponse | None:
    """Answer a browser's preflight for a status lookup; None when this is no preflight.

    A status URL is not in any whitelist, so an origin qualifies when some active
    application lists it; the lookup itself still needs that application's key.
    Raise 403 ``cors_origin_not_allowed`` otherwise.
    """
    meta = ctx.request.META
    origin = meta.get("HTTP_ORIGIN")
    requested = meta.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD", "").strip().upper()
    if ctx.request.method != "OPTIONS" or not origin or not requested:
        return None
    if requested not in ("GET", "HEAD") or not applications_for_origin(ctx.snapshot, origin):
        raise GatewayError(403, ErrorCode.CORS_ORIGIN_NOT_ALLOWED, "This origin may not read task status.")
    headers = [name.strip() for name in meta.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "").split(",")]
    allowed = ["X-API-Key", *(name for name in headers if _TOKEN.match(name) and name.lower() != "x-api-key")]
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Origin"] = origin
    response["Access-Control-Allow-Methods"] = "GET, HEAD"
    response["Access-Control-Allow-Headers"] = ", ".join(allowed)
    response["Access-Control-Max-Age"] = str(MAX_AGE_S)
    response["Vary"] = "Origin"
    return response


def _visible_task(ctx: RequestContext, task_id: str) -> TaskStatus:
    """Return the task when the caller may see it; raise 401 missing_api_key or 404 task_not_found.

    A task created with a key belongs to that key's application; an anonymous task
    (a public route, no key) is shown to whoever holds its id. Another application's
    task and an unknown id look the same (404), so ids cannot be probed.
    """
    task = task_status_get(task_id)
    if task is not None and task.application_id is not None:
        if ctx.application is None:
            raise GatewayError(401, ErrorCode.MISSING_API_KEY, "This task needs the creating application's API key.")
        if ctx.application.id != str(task.application_id):
            task = None
    if task is None:
        raise GatewayError(404, ErrorCode.TASK_NOT_FOUND, "No such task.")
    return task


def _render(task: TaskStatus) -> str:
    body = {
        "task_id": str(task.id),
        "queue": task.queue,
        "status": task.status,
        "result": task.result,
        "error": task.error,
        "created_at": task.created_at.isoformat(),
        "updated_at": task.updated_at.isoformat(),
    }
    return json.dumps(body, separators=(",", ":"))
