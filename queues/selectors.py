"""Reads of queue state: per-queue depth and consumers (SPEC §7 /admin/queues). Interim."""

from __future__ import annotations


def queue_stats() -> list[dict[str, object]]:
    """Return ``[{"queue", "depth", "consumers"}]`` per queue; depth None when unknown."""
    return []
