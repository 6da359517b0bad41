"""Reads of queue state: one task's status, and per-queue depth and consumers (SPEC §7)."""

from __future__ import annotations

import contextlib
import logging
import uuid

from kombu import Connection

from queues import topology
from queues.models import TaskStatus

logger = logging.getLogger(__name__)


def task_status_get(task_id: str) -> TaskStatus | None:
    """Return the task ``task_id`` (one query), or None when unknown or not a UUID."""
    try:
        pk = uuid.UUID(task_id)
    except (ValueError, TypeError):
        return None
    return TaskStatus.objects.filter(pk=pk).first()


def queue_stats(timeout_s: float = 2.0) -> list[dict[str, object]]:
    """Return ``[{"queue", "depth", "consumers", "dead_letter_depth"}]`` per queue.

    Depths and consumer counts come from a passive declare, so nothing is created;
    a value the broker cannot tell (consumers on Redis and filesystem) is None, and
    every value is None when the broker does not answer within ``timeout_s``.
    """
    from django.conf import settings

    stats: list[dict[str, object]] = [
        {"queue": name, "depth": None, "consumers": None, "dead_letter_depth": None} for name in topology.QUEUE_NAMES
    ]
    try:
        with Connection(
            settings.CELERY_BROKER_URL,
            transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
            connect_timeout=timeout_s,
        ) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout_s)
            exact_consumers = conn.transport.driver_type == "amqp"
            for row in stats:
                name = str(row["queue"])
                row["depth"], consumers = _declare_passive(conn, name)
                row["consumers"] = consumers if exact_consumers else None
                row["dead_letter_depth"], _ = _declare_passive(conn, topology.dead_letter_name(name))
    except Exception as exc:
        logger.warning("queue stats unavailable: %s", exc.__class__.__name__)
        for row in stats:
            row.update(depth=None, consumers=None, dead_letter_depth=None)
    return stats


def _declare_passive(conn: object, name: str) -> tuple[int | None, int | None]:
    # A passive declare of a missing queue closes an AMQP channel, so each gets its own.
    channel = conn.channel()  # type: ignore[attr-defined]  # kombu Connection
    try:
        ok = channel.queue_declare(queue=name, passive=True)
        return int(ok.message_count), int(ok.consumer_count)
    except Exception:
        return 0, 0
    finally:
        with contextlib.suppress(Exception):  # the broker may have closed it already
            channel.close()
