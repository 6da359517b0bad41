"""Task status records (SPEC §5) and the events the analytics handler stores."""

from __future__ import annotations

import uuid

from django.db import models


class TaskState(models.TextChoices):
    """A task's life: queued → started → (retrying → started)* → succeeded | failed."""

    QUEUED = "queued"
    STARTED = "started"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINISHED_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED})


class TaskStatus(models.Model):
    """One queued task as its caller sees it at ``/api/v1/tasks/<id>``.

    The row is written before the message is published, so a worker always finds it;
    ``idempotency_key`` holds a SHA-256 digest of the client's ``Idempotency-Key``
    (scoped to ``application_id``), never the raw header value.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    queue = models.CharField(max_length=32)
    application_id = models.UUIDField(null=True, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=TaskState.choices, default=TaskState.QUEUED)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    request_id = models.CharField(max_length=128, blank=True, default="")
    idempotency_key = models.CharField(max_length=64, null=True, blank=True)
    # When the broker confirmed the message; recorded for Idempotency-Key requests only,
    # so a replay never answers 202 before the first request's publish is settled.
    confirmed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        db_table = "gateway_task"
        ordering = ["-created_at"]
        verbose_name = "task"
        constraints = [
            # One task per (application, Idempotency-Key); the producer frees a key older
            # than the idempotency window before reusing it.
            models.UniqueConstraint(
                fields=["application_id", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="uniq_task_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.queue}:{self.id} ({self.status})"


class AnalyticsEvent(models.Model):
    """An analytics event stored by the default ``analytics`` handler."""

    id = models.BigAutoField(primary_key=True)
    task_id = models.UUIDField(db_index=True)
    application_id = models.UUIDField(null=True, blank=True, db_index=True)
    name = models.CharField(max_length=200)
    properties = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "gateway_analytics_event"
        ordering = ["-occurred_at"]

    def __str__(self) -> str:
        return f"{self.name} @ {self.occurred_at:%Y-%m-%d %H:%M:%S}"
