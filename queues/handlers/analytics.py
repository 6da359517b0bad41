"""Default ``analytics`` handler: store one event or a batch of events."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from queues.handlers.base import InvalidPayload, TaskInput, require_object
from queues.models import AnalyticsEvent

MAX_BATCH = 1000


def handle(task: TaskInput) -> dict[str, int]:
    """Store ``{"event", "properties"?, "timestamp"?}`` or ``{"events": [...]}`` in one insert.

    Returns ``{"stored": n}``. A batch is all-or-nothing: one bad event refuses it.
    """
    body = require_object(task.body)
    raw_events = body.get("events", [body])
    if not isinstance(raw_events, list) or not 1 <= len(raw_events) <= MAX_BATCH:
        raise InvalidPayload(f"'events' must be a list of 1-{MAX_BATCH} events")
    now = timezone.now()
    events = [_event(raw, index, task, now) for index, raw in enumerate(raw_events)]
    # The task id makes a redelivered batch replace itself instead of doubling.
    with transaction.atomic():
        AnalyticsEvent.objects.filter(task_id=task.task_id).delete()
        AnalyticsEvent.objects.bulk_create(events)
    return {"stored": len(events)}


def _event(raw: object, index: int, task: TaskInput, now: datetime) -> AnalyticsEvent:
    if not isinstance(raw, Mapping):
        raise InvalidPayload(f"event {index} is not an object")
    name = raw.get("event")
    if not isinstance(name, str) or not name or len(name) > 200:
        raise InvalidPayload(f"event {index}: 'event' must be a name of 1-200 characters")
    properties = raw.get("properties", {})
    if not isinstance(properties, Mapping):
        raise InvalidPayload(f"event {index}: 'properties' must be an object")
    occurred_at = now
    if raw.get("timestamp") is not None:
        parsed = parse_datetime(str(raw["timestamp"]))
        if parsed is None:
            raise InvalidPayload(f"event {index}: 'timestamp' is not an ISO 8601 time")
        occurred_at = parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)
    return AnalyticsEvent(
        task_id=task.task_id,
        application_id=task.application_id,
        name=name,
        properties=dict(properties),
        occurred_at=occurred_at,
    )
