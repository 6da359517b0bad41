"""Writes to task status: create before publishing, then each state change a worker makes."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from queues.models import FINISHED_STATES, TaskState, TaskStatus


def task_create(
    *,
    task_id: str,
    queue: str,
    application_id: str | None,
    request_id: str,
    idempotency_key: str | None = None,
    idempotency_since: datetime | None = None,
) -> tuple[TaskStatus, bool]:
    """Record a queued task; return ``(task, created)``.

    With ``idempotency_key`` (a digest) and an application, a task of the same
    application and key created at or after ``idempotency_since`` is returned instead
    (``created`` False), also when a concurrent request inserted it first.
    """
    if idempotency_key is not None and application_id is not None:
        existing = _idempotent_task(application_id, idempotency_key, None)
        if existing is not None:
            if idempotency_since is None or existing.created_at >= idempotency_since:
                return existing, False
            # A key older than the window is free again: unlink it from its old task.
            TaskStatus.objects.filter(pk=existing.pk).update(idempotency_key=None)
    else:
        idempotency_key = None
    fields = {
        "id": task_id,
        "queue": queue,
        "application_id": application_id,
        "request_id": request_id,
        "idempotency_key": idempotency_key,
    }
    if idempotency_key is None:
        return TaskStatus.objects.create(**fields), True  # one autocommitted INSERT
    try:
        with transaction.atomic():
            task = TaskStatus.objects.create(**fields)
    except IntegrityError:
        # A concurrent request with the same key inserted first: answer with its task.
        existing = _idempotent_task(application_id, idempotency_key, None)  # type: ignore[arg-type]  # checked above
        if existing is None:
            raise
        return existing, False
    return task, True


def _idempotent_task(application_id: str, key: str, since: datetime | None) -> TaskStatus | None:
    tasks = TaskStatus.objects.filter(application_id=application_id, idempotency_key=key)
    if since is not None:
        tasks = tasks.filter(created_at__gte=since)
    return tasks.first()


def task_discard(*, task_id: str) -> None:
    """Delete the record of a task whose message the broker did not confirm.

    A worker drops a gateway message whose record is gone, so a message that reached
    the broker after all is not run for a client that was told 503.
    """
    TaskStatus.objects.filter(pk=task_id, status=TaskState.QUEUED).delete()


def task_start(
    *, task_id: str, queue: str, application_id: str | None, request_id: str, create_missing: bool
) -> TaskStatus | None:
    """Mark a task started and count the attempt; return it, or None when it must not run.

    None: the record is missing (and ``create_missing`` is False) or the task already
    finished (a redelivery after the outcome was recorded).
    """
    now = timezone.now()
    updated = (
        TaskStatus.objects.filter(pk=task_id)
        .exclude(status__in=FINISHED_STATES)
        .update(status=TaskState.STARTED, attempts=F("attempts") + 1, updated_at=now)
    )
    if updated:
        return TaskStatus.objects.get(pk=task_id)
    if not create_missing or TaskStatus.objects.filter(pk=task_id).exists():
        return None
    task, _ = TaskStatus.objects.get_or_create(
        pk=task_id,
        defaults={
            "queue": queue,
            "application_id": application_id,
            "request_id": request_id,
            "status": TaskState.STARTED,
            "attempts": 1,
        },
    )
    return task


def task_confirmed(*, task_id: str) -> None:
    """Record that the broker confirmed the task's message."""
    TaskStatus.objects.filter(pk=task_id).update(confirmed_at=timezone.now())


def task_retrying(*, task_id: str, error: str) -> None:
    """Mark a task waiting for its next attempt, keeping the last error."""
    TaskStatus.objects.filter(pk=task_id).update(status=TaskState.RETRYING, error=error, updated_at=timezone.now())


def task_succeed(*, task_id: str, result: object) -> None:
    """Record a task's result."""
    TaskStatus.objects.filter(pk=task_id).update(
        status=TaskState.SUCCEEDED, result=result, error=None, updated_at=timezone.now()
    )


def task_fail(*, task_id: str, error: str) -> None:
    """Record that a task failed for good."""
    TaskStatus.objects.filter(pk=task_id).update(status=TaskState.FAILED, error=error, updated_at=timezone.now())


def tasks_delete_expired(*, ttl_hours: int, now: datetime | None = None) -> int:
    """Delete task records untouched for ``ttl_hours``; return how many were deleted."""
    cutoff = (now or timezone.now()) - timedelta(hours=ttl_hours)
    deleted, _ = TaskStatus.objects.filter(updated_at__lt=cutoff).delete()
    return deleted
