"""Per-minute traffic counts behind the dashboard (gateway_core/traffic.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from gateway_core import traffic
from gateway_core.traffic import FileTrafficStore, TrafficRecorder

T0 = 1_800_000_000.0  # a minute boundary: 30_000_000 * 60


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class MemoryStore:
    def __init__(self) -> None:
        self.rows: traffic.Rows = {}
        self.fail = False

    def add(self, rows) -> None:
        if self.fail:
            raise ConnectionError("store away")
        for key, row in rows.items():
            traffic.add_row(self.rows.setdefault(key, traffic.new_row()), row)

    def read(self, first_minute: int, last_minute: int) -> traffic.Rows:
        return {k: v for k, v in self.rows.items() if first_minute <= k[0] <= last_minute}


def recorder_without_thread(store, clock) -> TrafficRecorder:
    recorder = TrafficRecorder(store, clock=clock)
    recorder._flusher_pid = os.getpid()  # flushed by hand in these tests
    return recorder


def test_recorder_counts_per_minute_and_service_with_status_classes_and_latency() -> None:
    clock, store = FakeClock(), MemoryStore()
    recorder = recorder_without_thread(store, clock)
    recorder.record("orders", 200, 0.004)
    recorder.record("orders", 404, 0.040)
    recorder.record("orders", 502, 3.0)
    clock.now += 60
    recorder.record("billing", 200, 0.1)
    assert store.rows == {}  # nothing leaves the worker until a flush

    recorder.flush()
    minute = int(T0) // 60
    row = store.rows[(minute, "orders")]
    assert row[: traffic.FIRST_BUCKET] == [3, 1, 1]
    buckets = row[traffic.FIRST_BUCKET :]
    assert buckets[0] == 1  # <= 5 ms
    assert buckets[traffic.LATENCY_BOUNDS_MS.index(50)] == 1  # 40 ms falls in (30, 50]
    assert buckets[traffic.LATENCY_BOUNDS_MS.index(5000)] == 1  # 3 s falls in (2.5 s, 5 s]
    assert store.rows[(minute + 1, "billing")][0] == 1


def test_a_failed_flush_is_dropped_not_retried_forever(caplog) -> None:
    clock, store = FakeClock(), MemoryStore()
    recorder = recorder_without_thread(store, clock)
    store.fail = True
    for _ in range(3):
        recorder.record("orders", 200, 0.01)
        recorder.flush()  # must not raise into the worker
    assert [r.getMessage() for r in caplog.records] == ["dashboard traffic counts not stored: ConnectionError"]
    store.fail = False
    recorder.record("orders", 200, 0.01)
    recorder.flush()
    assert store.rows[(int(T0) // 60, "orders")][0] == 1


def test_percentile_interpolates_within_the_bucket() -> None:
    row = traffic.new_row()
    row[traffic.FIRST_BUCKET + traffic.LATENCY_BOUNDS_MS.index(100)] = 100  # all in (75, 100] ms
    assert traffic.percentile_ms(row, 0.5) == pytest.approx(87.5)
    assert traffic.percentile_ms(row, 0.95) == pytest.approx(98.8, abs=0.1)
    assert traffic.percentile_ms(traffic.new_row(), 0.5) is None
    row[traffic.LAST_BUCKET] = 1000  # beyond the last bound: reported as the last bound
    assert traffic.percentile_ms(row, 0.95) == traffic.LATENCY_BOUNDS_MS[-1]


def test_summary_gives_an_hour_of_series_busiest_service_first() -> None:
    clock, store = FakeClock(T0 + 30), MemoryStore()
    recorder = recorder_without_thread(store, clock)
    for _ in range(6):
        recorder.record("orders", 200, 0.02)
    recorder.record("orders", 503, 0.02)
    recorder.record("billing", 200, 0.5)
    clock.now -= 600  # ten minutes earlier
    recorder.record("billing", 500, 0.5)
    recorder.flush()

    summary = traffic.traffic_summary(store, now_s=T0 + 30)
    assert len(summary["minutes"]) == 61
    assert summary["minutes"][-1] == T0
    orders, billing = summary["services"]
    assert orders["service"] == "orders"
    assert orders["requests"][-1] == 7
    assert orders["error_rate"][-1] == pytest.approx(1 / 7, abs=1e-4)
    assert orders["error_rate"][0] is None  # no traffic: no rate, not 0
    assert orders["totals"]["requests"] == 7
    # 7 requests in the 5 whole minutes plus the 30 s of the current one.
    assert orders["totals"]["requests_per_min"] == pytest.approx(7 * 60 / 330, abs=0.01)
    assert billing["requests"][-11] == 1
    assert billing["totals"]["error_rate"] == 0.5
    assert 300 < billing["totals"]["p50_ms"] <= 500


def test_file_store_sums_the_files_of_every_worker_and_drops_stale_ones(tmp_path: Path) -> None:
    clock = FakeClock(time.time())  # file ages are compared with the real mtime
    minute = int(clock.now) // 60
    first, second = FileTrafficStore(tmp_path, clock=clock), FileTrafficStore(tmp_path, clock=clock)
    row = traffic.new_row()
    row[0] = 2
    first.add({(minute, "orders"): row})
    first.add({(minute, "orders"): row})
    second.add({(minute, "orders"): row, (minute, "billing"): row})
    assert len(list(tmp_path.glob("*.json"))) == 2

    reader = FileTrafficStore(tmp_path, clock=clock)
    rows = reader.read(minute - 60, minute)
    assert rows[(minute, "orders")][0] == 6
    assert rows[(minute, "billing")][0] == 2

    stale = tmp_path / "gone-worker.json"
    stale.write_text(json.dumps([[minute, "orders", row]]))
    old = time.time() - 3 * 3600
    os.utime(stale, (old, old))
    reader.clock = time.time
    assert reader.read(minute - 60, minute)[(minute, "orders")][0] == 6
    assert not stale.exists()


def test_flusher_thread_starts_once_per_process_and_flushes(monkeypatch) -> None:
    monkeypatch.setattr(traffic, "FLUSH_INTERVAL_S", 0.05)
    store = MemoryStore()
    recorder = TrafficRecorder(store)
    recorder.record("orders", 200, 0.01)
    recorder.record("orders", 200, 0.01)
    deadline = time.monotonic() + 5
    while not store.rows and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sum(row[0] for row in store.rows.values()) == 2
