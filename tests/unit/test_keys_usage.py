"""``last_used_at`` bookkeeping: throttled notes, batched writes, logged failures (access/usage.py)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import pytest

from access.usage import UsageRecorder
from tests.support.builders import make_app, make_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_noted_at_most_once_a_minute() -> None:
    written: list[dict[str, datetime]] = []
    ticks = Ticks()
    recorder = UsageRecorder(
        write=written.append, claim=lambda key_id: True, monotonic=ticks, now=lambda: T0, flush_interval_s=3600
    )
    for _ in range(100):
        recorder.key_used("k1")
    recorder.key_used("k2")
    assert recorder.flush() == 2
    for _ in range(100):
        recorder.key_used("k1")
    assert recorder.flush() == 0
    ticks.now += 60
    recorder.key_used("k1")
    assert recorder.flush() == 1
    assert written == [{"k1": T0, "k2": T0}, {"k1": T0}]
    recorder.stop()


def test_a_failed_write_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[dict[str, datetime]] = []

    def flaky(batch: dict[str, datetime]) -> None:
        attempts.append(dict(batch))
        if len(attempts) == 1:
            raise ConnectionError("database went away")

    recorder = UsageRecorder(write=flaky, claim=lambda key_id: True, now=lambda: T0, flush_interval_s=3600)
    recorder.key_used("k1")
    with caplog.at_level(logging.ERROR, logger="access.usage"):
        assert recorder.flush() == 0
    assert any("last_used_at" in r.getMessage() for r in caplog.records)
    assert recorder.flush() == 1
    assert attempts == [{"k1": T0}, {"k1": T0}]
    recorder.stop()


def test_the_background_flusher_writes_without_being_asked() -> None:
    written: list[dict[str, datetime]] = []
    recorder = UsageRecorder(write=written.append, claim=lambda key_id: True, flush_interval_s=0.05)
    recorder.key_used("k1")
    deadline = time.monotonic() + 5
    while not written and time.monotonic() < deadline:
        time.sleep(0.02)
    assert written and "k1" in written[0]
    recorder.stop()


@pytest.mark.django_db(transaction=True)
def test_flush_updates_last_used_at_in_the_database() -> None:
    app = make_app("usage-app")
    key, _ = make_key(app)
    updated_at = key.updated_at
    recorder = UsageRecorder(claim=lambda key_id: True, now=lambda: T0, flush_interval_s=3600)
    recorder.key_used(str(key.id))
    assert recorder.flush() == 1
    key.refresh_from_db()
    assert key.last_used_at == T0
    assert key.updated_at == updated_at  # a usage note is not a config change
    recorder.stop()


def test_a_keys_minute_is_written_by_one_process_only() -> None:
    """Two recorders (two workers) sharing a cache: one write per key per minute."""
    from django.core.cache import cache

    from access.usage import claim_minute

    cache.delete("access:last-used:shared-key")
    written: list[dict[str, datetime]] = []
    workers = [UsageRecorder(write=written.append, claim=claim_minute, flush_interval_s=3600) for _ in range(2)]
    for worker in workers:
        worker.key_used("shared-key")
        worker.flush()
        worker.stop()
    assert len(written) == 1
