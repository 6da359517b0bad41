"""Health per service and version from the per-minute traffic counts (gateway_core/traffic.py)."""

from __future__ import annotations

from gateway_core import traffic
from gateway_core.traffic import TrafficRecorder, health_summary

T0 = 1_800_000_000.0


class MemoryStore:
    """Sums what every recorder adds, as the Redis and file stores do."""

    def __init__(self) -> None:
        self.rows: traffic.Rows = {}

    def add(self, rows) -> None:  # type: ignore[no-untyped-def]  # TrafficStore.add
        for key, row in rows.items():
            traffic.add_row(self.rows.setdefault(key, traffic.new_row()), row)

    def read(self, first_minute: int, last_minute: int) -> traffic.Rows:
        return {k: v for k, v in self.rows.items() if first_minute <= k[0] <= last_minute}


def worker(store: MemoryStore, now: list[float]) -> TrafficRecorder:
    recorder = TrafficRecorder(store, clock=lambda: now[0])
    recorder._flusher_pid = -1  # no background thread: flushed by hand
    recorder._start_flusher = lambda: None  # type: ignore[method-assign]  # no thread in a unit test
    return recorder


def test_health_sums_workers_per_version_and_names_open_breakers_and_fallbacks() -> None:
    store, now = MemoryStore(), [T0]
    first, second = worker(store, now), worker(store, now)
    for recorder in (first, second):
        for _ in range(9):
            recorder.record("orders", 200, 0.02, version="v1")
        recorder.record("orders", 503, 0.001, version="v2", circuit_open=True)
        recorder.record("billing", 200, 0.2, version="default", fallback=recorder is first)
        recorder.record("", 404, 0.001)  # no route: not a service
        recorder.flush()

    health = {item["service"]: item for item in health_summary(store, T0 + 10)}
    assert set(health) == {"orders", "billing"}
    orders = health["orders"]
    assert (orders["requests"], orders["error_rate"], orders["status"], orders["breaker_open"]) == (
        20,
        0.1,
        "failing",
        True,
    )
    v1, v2 = orders["versions"]
    assert (v1["version"], v1["requests"], v1["status"], v1["breaker_open"]) == ("v1", 18, "ok", False)
    assert (v2["version"], v2["circuit_open"], v2["status"]) == ("v2", 2, "failing")
    assert health["billing"]["fallback_share"] == 0.5
    assert health["billing"]["status"] == "degraded"
    assert [item["service"] for item in health_summary(store, T0 + 10)] == ["orders", "billing"]  # worst first


def test_health_covers_five_minutes_and_a_breaker_counts_as_open_for_two() -> None:
    store, now = MemoryStore(), [T0]
    recorder = worker(store, now)
    recorder.record("orders", 503, 0.001, version="v2", circuit_open=True)
    recorder.flush()

    now[0] = T0 + 150  # two and a half minutes later: still in the window, breaker long closed
    (orders,) = health_summary(store, now[0])
    assert orders["requests"] == 1 and orders["breaker_open"] is False and orders["status"] == "failing"
    assert health_summary(store, T0 + 400) == []  # beyond five minutes
