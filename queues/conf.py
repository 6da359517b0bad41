"""Typed queue settings, read once from ``settings.QUEUES`` and the gateway config."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Queue knobs with their defaults (README, Queue routes and workers)."""

    retry_backoff_s: float = 2.0  # GATEWAY_TASK_RETRY_BACKOFF_S: first retry delay
    retry_backoff_max_s: float = 300.0  # GATEWAY_TASK_RETRY_BACKOFF_MAX_S: cap of one delay
    publish_timeout_s: float = 5.0  # GATEWAY_QUEUE_PUBLISH_TIMEOUT_S: connect + confirm, SPEC §5
    callback_timeout_s: float = 5.0  # GATEWAY_CALLBACK_TIMEOUT_S: one callback POST
    idempotency_hours: int = 24  # GATEWAY_IDEMPOTENCY_HOURS: Idempotency-Key window


@cache
def queue_config() -> QueueConfig:
    """Return the process's QueueConfig (tests call ``cache_clear``)."""
    from django.conf import settings

    raw = getattr(settings, "QUEUES", {})
    return QueueConfig(**{key.lower(): value for key, value in raw.items()})
