"""One thin Celery task per queue on a base that owns status, retries, dead-lettering and callbacks.

A message's life on a worker: parse it (an invalid message fails at once), mark the
task ``started``, run the queue's handler, then record ``succeeded`` or, on an error:
- :class:`InvalidPayload` / :class:`PermanentError`: ``failed`` at once;
- anything else: ``retrying``, sent again after an exponential backoff with jitter,
  until ``GATEWAY_TASK_MAX_RETRIES`` retries were spent, then ``failed``.
A failed message is copied to the queue's dead-letter queue (``email.dlq``...) with
the reason in its ``x-gateway-error`` header, and the callback (if any) is queued.

Infrastructure errors (the database, the broker, a socket: ``INFRASTRUCTURE_ERRORS``;
any error of the bookkeeping around the handler, and a database error under it) never
end in ``failed`` or an acknowledgement: the delivery is rejected with requeue after a
short pause, and runs again once the worker can reach what it needs (SPEC §5).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from datetime import UTC, datetime
from pathlib import Path

from celery import Task, current_app, shared_task
from celery.exceptions import Reject, Retry
from django import db
from kombu.exceptions import OperationalError as KombuOperationalError

from gateway_core.conf import gateway_config
from queues import spans, topology
from queues.callbacks import CallbackFailed, CallbackRefused, callback_body, callback_send
from queues.conf import queue_config
from queues.handlers.base import HandlerError, InvalidPayload, PermanentError, TaskInput
from queues.messages import InvalidMessage, TaskMessage, message_parse
from queues.models import TaskState
from queues.registry import handler_for
from queues.services import task_fail, task_retrying, task_start, task_succeed, tasks_delete_expired

logger = logging.getLogger("gateway.worker")

CLEANUP_EVERY_S = 3600.0


def backoff_delay(retries: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Return the seconds to wait before retry number ``retries + 1``.

    Exponential (``base_s * 2**retries``, capped at ``max_s``) with "equal jitter":
    a uniform draw from the upper half, so retries of many failed tasks spread out
    instead of hitting a recovering provider together.
    """
    delay = min(max_s, base_s * (2 ** min(retries, 32)))
    return (rng or random).uniform(delay / 2, delay)


class QueueTask(Task):
    """Base of the queue tasks: the handler is looked up per queue, everything else is here."""

    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    queue_name: str = ""

    def process(self, raw: object) -> None:
        """Run one delivery of a task message (see the module docstring)."""
        try:
            message = message_parse(raw, frozenset({self.queue_name}))
        except InvalidMessage as exc:
            logger.error("invalid task message dead-lettered", extra={"queue": self.queue_name, "reason": str(exc)})
            self._dead_letter(raw, f"invalid message: {exc}")
            return
        try:
            self._run(message)
        except (Retry, Reject):
            raise
        except Exception as exc:
            # Everything the handler's own outcomes did not cover failed around it: the
            # database (task status), the broker (retry, dead letter, callback) or the
            # result backend. Nothing here may write, since the failing part is what a
            # write needs: the delivery goes back to the queue unacknowledged.
            _requeue(message, exc)
        else:
            _infrastructure_backoff.reset()
        finally:
            _maybe_cleanup()

    def _run(self, message: TaskMessage) -> None:
        task = task_start(
            task_id=message.task_id,
            queue=message.queue,
            application_id=message.application_id,
            request_id=message.request_id,
            create_missing=message.origin == "service",
        )
        if task is None:
            # Finished already (a redelivery after the outcome was saved), or the gateway
            # answered 503 for it and deleted its record: never run it again.
            logger.warning("task message dropped", extra={"queue": message.queue, "task_id": message.task_id})
            return
        task_input = TaskInput(
            task_id=message.task_id,
            queue=message.queue,
            body=message.body,
            application_id=message.application_id,
            request_id=message.request_id,
            method=message.method,
            path=message.path,
            query=message.query,
            headers=message.headers,
            received_at=message.received_at,
            attempt=task.attempts,
        )
        try:
            result = _json_ready(handler_for(message.queue)(task_input))
        except DATABASE_ERRORS:
            raise  # the database went away under the handler (analytics stores rows): requeue
        except (InvalidPayload, PermanentError) as exc:
            self._fail(message, str(exc) or exc.__class__.__name__)
            return
        except HandlerError as exc:
            self._retry_or_fail(message, str(exc) or exc.__class__.__name__, exc)
            return
        except Exception as exc:
            # Unexpected errors are retried, but their text (which may hold a URL with
            # credentials) stays in the worker log, not in the caller-visible status.
            logger.exception("handler error", extra={"queue": message.queue, "task_id": message.task_id})
            self._retry_or_fail(message, f"handler error: {exc.__class__.__name__}", exc)
            return
        task_succeed(task_id=message.task_id, result=result)
        logger.info("task succeeded", extra={"queue": message.queue, "task_id": message.task_id})
        self._queue_callback(message, TaskState.SUCCEEDED, result, None)

    def _retry_or_fail(self, message: TaskMessage, error: str, exc: Exception) -> None:
        max_retries = gateway_config().task_max_retries
        retries = self.request.retries
        if retries >= max_retries:
            self._fail(message, f"{error} (gave up after {retries + 1} attempts)")
            return
        config = queue_config()
        delay = backoff_delay(retries, config.retry_backoff_s, config.retry_backoff_max_s)
        task_retrying(task_id=message.task_id, error=error)
        logger.warning(
            "task retrying",
            extra={"queue": message.queue, "task_id": message.task_id, "retry": retries + 1, "delay_s": delay},
        )
        # Raises Retry once the retry is published; a broker error otherwise, which
        # process() answers by handing this delivery back unacknowledged.
        raise self.retry(
            countdown=delay, exc=exc, max_retries=max_retries, kwargsrepr=_redacted(message.queue, message.task_id)
        )

    def _fail(self, message: TaskMessage, error: str) -> None:
        # Dead-letter first: once the status says ``failed``, the dead-letter queue holds it.
        self._dead_letter(message.to_dict(), error)
        task_fail(task_id=message.task_id, error=error)
        spans.task_failed()
        logger.error("task failed", extra={"queue": message.queue, "task_id": message.task_id, "error": error})
        self._queue_callback(message, TaskState.FAILED, None, error)

    def _dead_letter(self, raw: object, error: str) -> None:
        """Copy the message to the queue's dead-letter queue with the reason in a header."""
        task_id = raw.get("task_id") if isinstance(raw, dict) else None
        self.app.send_task(
            self.name,
            kwargs={"message": raw},
            kwargsrepr=_redacted(self.queue_name, str(task_id)),
            task_id=str(task_id or self.request.id),
            queue=topology.dead_letter_queue(self.queue_name),
            headers={
                "x-gateway-error": error[:1000],
                "x-gateway-failed-at": datetime.now(UTC).isoformat(),
                "x-gateway-retries": self.request.retries,
            },
        )

    def _queue_callback(self, message: TaskMessage, status: str, result: object, error: str | None) -> None:
        if not message.callback_url:
            return
        body = callback_body(task_id=message.task_id, status=status, result=result, error=error)
        deliver_callback.apply_async(
            args=(message.callback_url, body.decode(), message.task_id),
            # A client's X-Callback-URL is checked for internal addresses; a service's own is trusted.
            kwargs={"check_address": message.origin == "gateway", **spans.callback_trace()},
            argsrepr=f"(<callback of {message.task_id}>)",
            queue=topology.work_queue(message.queue),
        )


# What a delivery cannot be blamed for: the database, the broker or the network failed.
# ``OperationalError``/``InterfaceError`` are Django's (and psycopg pool timeouts, which
# Django wraps); kombu's ``OperationalError`` and ``OSError`` cover brokers and sockets.
# A handler's own network errors are its outcomes (retried, then dead-lettered); only the
# database failing under it is infrastructure.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (db.OperationalError, db.InterfaceError)
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, KombuOperationalError, OSError)


class _Backoff:
    """Seconds to pause before handing a delivery back: 0.5 s doubling to 5 s, reset by a success.

    Without a pause a broker redelivers the message at once, to the same worker, and
    a worker whose database is down would spin through its queue.
    """

    def __init__(self, first_s: float = 0.5, max_s: float = 5.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.next_s = first_s

    def pause(self) -> float:
        delay, self.next_s = self.next_s, min(self.max_s, self.next_s * 2)
        return delay

    def reset(self) -> None:
        self.next_s = self.first_s


_infrastructure_backoff = _Backoff()


def _requeue(message: TaskMessage, exc: Exception) -> None:
    """Drop broken connections, pause, and hand the delivery back to the broker unacknowledged.

    Raises ``Reject(requeue=True)``: Celery rejects the message (never acknowledges it),
    so the broker delivers it again; if even the reject cannot reach the broker, the
    broker gives back what a closed channel held unacknowledged. The task keeps its
    status (``started``), is never marked ``failed``, and runs again on recovery.
    """
    extra = {"queue": message.queue, "task_id": message.task_id, "reason": exc.__class__.__name__}
    if isinstance(exc, INFRASTRUCTURE_ERRORS):
        logger.warning("task handed back to the queue: infrastructure error", extra=extra)
    else:  # a fault of the bookkeeping itself: the traceback belongs in the worker log
        logger.exception("task handed back to the queue: unexpected error", extra=extra)
    with contextlib.suppress(Exception):  # closing what failed may fail too
        db.connections.close_all()
    time.sleep(_infrastructure_backoff.pause())
    raise Reject(exc.__class__.__name__, requeue=True) from exc


def _redacted(queue: str, task_id: str) -> str:
    """Return what worker logs show instead of a message body (it may hold personal data)."""
    return f"{{'message': <{queue} task {task_id}>}}"


def _json_ready(result: object) -> object:
    """Return ``result`` as plain JSON data (unknown types as strings)."""
    return json.loads(json.dumps(result, default=str))


def _queue_task(queue: str) -> Task:
    """Register ``gateway.<queue>``: a thin task handing its message to the base class."""

    def run(self: QueueTask, message: object) -> None:
        with spans.task_run(queue, message, self.request.retries):
            self.process(message)

    run.__name__ = queue
    run.__doc__ = f"Handle one {queue} task message (see queues.tasks)."
    return shared_task(bind=True, base=QueueTask, name=topology.task_name(queue), queue=queue, queue_name=queue)(run)


email = _queue_task("email")
sms = _queue_task("sms")
ai = _queue_task("ai")
analytics = _queue_task("analytics")
execution = _queue_task("execution")


@shared_task(bind=True, name=topology.CALLBACK_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_callback(
    self: Task, url: str, body: str, task_id: str, check_address: bool = True, traceparent: str | None = None
) -> None:
    """POST a task's outcome to its callback URL, retried with backoff on failure.

    ``check_address``: refuse a non-public address (a client's URL) unless
    ``GATEWAY_CALLBACK_ALLOW_PRIVATE``; false for a callback a service published itself.
    ``traceparent``: the task's span, which the callback's client span continues.
    """
    config = queue_config()
    try:
        with spans.callback_post(url, traceparent) as (span, trace_headers):
            status = callback_send(
                url,
                body.encode(),
                task_id=task_id,
                secret=gateway_config().callback_secret,
                timeout_s=config.callback_timeout_s,
                allow_private=gateway_config().callback_allow_private or not check_address,
                headers=trace_headers,
            )
            if span is not None:
                span.attributes["http.response.status_code"] = status
    except CallbackRefused as exc:
        logger.warning("callback refused", extra={"task_id": task_id, "reason": str(exc)})
        return
    except CallbackFailed as exc:
        max_retries = gateway_config().task_max_retries
        if self.request.retries >= max_retries:
            logger.error("callback given up", extra={"task_id": task_id, "reason": str(exc)})
            return
        delay = backoff_delay(self.request.retries, config.retry_backoff_s, config.retry_backoff_max_s)
        logger.warning("callback retrying", extra={"task_id": task_id, "reason": str(exc), "delay_s": delay})
        raise self.retry(
            countdown=delay, exc=exc, max_retries=max_retries, argsrepr=f"(<callback of {task_id}>)"
        ) from None
    logger.info("callback delivered", extra={"task_id": task_id})


@shared_task(name=topology.CLEANUP_TASK, ignore_result=True)
def cleanup() -> int:
    """Delete task records older than GATEWAY_TASK_TTL_HOURS and old filesystem-broker files."""
    return cleanup_expired()


def cleanup_expired(now: float | None = None) -> int:
    """Delete expired task records and processed filesystem-broker files; return records deleted."""
    ttl_hours = gateway_config().task_ttl_hours
    deleted = tasks_delete_expired(ttl_hours=ttl_hours)
    options = current_app.conf.broker_transport_options or {}
    processed = options.get("processed_folder")
    if processed and options.get("store_processed"):
        cutoff = (now or time.time()) - ttl_hours * 3600
        for path in Path(processed).glob("*.msg"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                continue  # removed by another worker meanwhile
    return deleted


_last_cleanup = {"at": time.monotonic()}


def _maybe_cleanup() -> None:
    """Run the expiry cleanup at most once an hour per worker process (no beat needed)."""
    if time.monotonic() - _last_cleanup["at"] < CLEANUP_EVERY_S:
        return
    _last_cleanup["at"] = time.monotonic()
    try:
        cleanup_expired()
    except Exception:
        logger.exception("task cleanup failed")
