"""Publish a queue route's request as a Celery task, confirmed by the broker (SPEC §5).

The order matters: the status record is written first (so a fast worker finds it),
then the message is published and confirmed within ``GATEWAY_QUEUE_PUBLISH_TIMEOUT_S``
(5 s). Without a confirm the record is deleted and the client gets 503
``queue_unavailable``; a worker that still receives that message drops it, because its
record is gone. A 202 therefore always names a message the broker holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import timedelta
from functools import cache

from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from gateway_core.conf import gateway_config
from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError
from queues import spans
from queues.client import PublishError, QueueClient
from queues.conf import queue_config
from queues.messages import is_callback_url, message_build
from queues.models import TaskState, TaskStatus
from queues.services import task_confirmed, task_create, task_discard

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "HTTP_IDEMPOTENCY_KEY"
CALLBACK_HEADER = "HTTP_X_CALLBACK_URL"
_READ_CHUNK = 64 * 1024


@cache
def queue_client() -> QueueClient:
    """Return this process's client for the configured broker (built on first use)."""
    from django.conf import settings

    return QueueClient(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        timeout_s=queue_config().publish_timeout_s,
    )


def publish(ctx: RequestContext) -> HttpResponse:
    """Publish to ``ctx.version.queue`` and answer 202, or raise GatewayError.

    405 ``method_not_allowed`` (not POST), 415 ``unsupported_media_type`` (not JSON),
    400 ``invalid_json``, 413 ``payload_too_large``, 503 ``queue_unavailable``.
    """
    assert ctx.version is not None and ctx.version.queue is not None  # noqa: S101 - the dispatcher's contract
    assert ctx.route is not None  # noqa: S101 - idem
    queue = ctx.version.queue
    ctx.upstream = f"queue://{queue}"
    request = ctx.request
    if request.method != "POST":
        raise GatewayError(
            405, ErrorCode.METHOD_NOT_ALLOWED, "Queue routes accept POST only.", headers={"Allow": "POST"}
        )
    if not _is_json_type(request.META.get("CONTENT_TYPE", "")):
        raise GatewayError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Send the body as application/json.")
    body = _parse_json(_read_body(request, gateway_config().max_body_bytes))

    application_id = ctx.application.id if ctx.application is not None else None
    idempotency_key = _idempotency_digest(request) if application_id is not None else None
    callback_url = request.META.get(CALLBACK_HEADER) or None
    if callback_url is not None and not is_callback_url(callback_url):
        callback_url = None  # SPEC §5: http(s) callbacks only; anything else is ignored

    span = spans.publish_start(queue)
    message = message_build(
        queue=queue,
        body=body,
        origin="gateway",
        request_id=ctx.request_id,
        application_id=application_id,
        method=request.method,
        path=ctx.route.upstream_prefix + ctx.rest_path,
        query=request.META.get("QUERY_STRING", ""),
        headers=spans.trace_headers(span, _forwarded_headers(ctx)),  # the publish span's traceparent
        callback_url=callback_url,
    )
    window = timedelta(hours=queue_config().idempotency_hours)
    for _ in range(2):
        try:
            task, created = task_create(
                task_id=message.task_id,
                queue=queue,
                application_id=application_id,
                request_id=ctx.request_id,
                idempotency_key=idempotency_key,
                idempotency_since=timezone.now() - window,
            )
        except DatabaseError:
            # Without its status record a task could never be looked up: do not queue it.
            logger.warning("task record not written", extra={"queue": queue, "request_id": ctx.request_id})
            raise GatewayError(503, ErrorCode.QUEUE_UNAVAILABLE, "Task status storage is not available.") from None
        if created:
            break
        first = _confirmed(task)
        if first is not None:
            return _accepted(first, replayed=True)
        # The first request's publish failed and its task was deleted: queue this one.
    else:
        raise GatewayError(503, ErrorCode.QUEUE_UNAVAILABLE, f"The {queue} queue is not available.")
    # The publish may wait seconds for the broker: hold no pooled database connection meanwhile.
    _release_connection()
    try:
        queue_client().send(message)
    except PublishError as exc:
        spans.publish_end(span, message.task_id, ErrorCode.QUEUE_UNAVAILABLE.value)
        task_discard(task_id=message.task_id)
        logger.warning(
            "queue publish failed",
            extra={"queue": queue, "task_id": message.task_id, "request_id": ctx.request_id, "reason": str(exc)},
        )
        raise GatewayError(503, ErrorCode.QUEUE_UNAVAILABLE, f"The {queue} queue is not available.") from None
    spans.publish_end(span, message.task_id)
    if idempotency_key is not None:
        try:
            task_confirmed(task_id=message.task_id)
        except DatabaseError:
            # The message is queued; a replay will then wait the publish timeout and queue anew.
            logger.warning("task confirm not recorded", extra={"queue": queue, "task_id": message.task_id})
    return _accepted(task, replayed=False)


def _confirmed(task: TaskStatus) -> TaskStatus | None:
    """Return the first task of an Idempotency-Key once its publish is settled; None if it failed.

    A replay must not answer 202 while the first request still waits for the broker
    (its publish may yet fail and delete the task), so it waits for the confirm to be
    recorded, a worker to start the task, or the task to disappear. A task still
    unconfirmed well after the publish timeout belongs to a request that died before
    publishing; it is deleted, so this request queues a new one.
    """
    settled_by = task.created_at + timedelta(seconds=queue_config().publish_timeout_s + 2.0)
    while task.confirmed_at is None and task.status == TaskState.QUEUED:
        if timezone.now() > settled_by:
            task_discard(task_id=str(task.pk))
            return None
        _release_connection()
        time.sleep(0.05)  # cooperative under gevent
        refreshed = TaskStatus.objects.filter(pk=task.pk).first()
        if refreshed is None:
            return None
        task = refreshed
    return task


def _release_connection() -> None:
    """Give this greenlet's database connection back to the pool (a new query takes one again)."""
    conn = connections["default"]
    if conn.connection is not None and not conn.in_atomic_block:
        conn.close()


def _accepted(task: TaskStatus, *, replayed: bool) -> HttpResponse:
    status_url = f"/api/v1/tasks/{task.id}"
    body = {"task_id": str(task.id), "status": task.status, "queue": task.queue, "status_url": status_url}
    response = HttpResponse(json.dumps(body, separators=(",", ":")), status=202, content_type="application/json")
    response["Location"] = status_url
    if replayed:
        response["Idempotent-Replayed"] = "true"
    return response


def _is_json_type(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def _read_body(request: HttpRequest, limit: int) -> bytes:
    """Read at most ``limit`` bytes of body; 413 beyond. Chunked bodies are read too."""
    environ = request.META
    if not environ.get("CONTENT_LENGTH") and environ.get("wsgi.input_terminated"):
        stream = environ["wsgi.input"]  # chunked: Django's stream would read nothing
    else:
        stream = request
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"The body exceeds {limit} bytes.")
    return b"".join(chunks)


def _parse_json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise GatewayError(400, ErrorCode.INVALID_JSON, "The body is not valid JSON.") from None


def _idempotency_digest(request: HttpRequest) -> str | None:
    value = request.META.get(IDEMPOTENCY_HEADER, "").strip()
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest() if value else None


def _forwarded_headers(ctx: RequestContext) -> dict[str, str]:
    """Return the request headers plus the ones the gateway adds (filtered by message_build)."""
    headers = {
        key[5:].replace("_", "-").lower(): value for key, value in ctx.request.META.items() if key.startswith("HTTP_")
    }
    if "CONTENT_TYPE" in ctx.request.META:
        headers["content-type"] = ctx.request.META["CONTENT_TYPE"]
    # Client-sent consumer headers are never believed; the gateway sets its own.
    headers.pop("x-consumer-id", None)
    headers.pop("x-consumer-name", None)
    if ctx.application is not None:
        headers["x-consumer-id"] = ctx.application.id
        headers["x-consumer-name"] = ctx.application.name
    headers["x-request-id"] = ctx.request_id
    if ctx.client_ip:
        headers["x-forwarded-for"] = ctx.client_ip
    return headers
