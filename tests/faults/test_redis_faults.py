"""A Redis that goes down or hangs under rate-limited traffic: all served, one request per worker pays (SPEC §4.6)."""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests

from tests.faults.conftest import through
from tests.support.backends import requires_redis
from tests.support.builders import make_public_app, make_service
from tests.support.upstream import EchoUpstream

pytestmark = [pytest.mark.django_db(transaction=True), requires_redis]

WORKERS = 2
RATE_PER_S = 45
DURATION_S = 10.0
FAULT_AT_S = 2.0
REDIS_TIMEOUT_S = 0.25  # GATEWAY_REDIS_TIMEOUT_MS' default


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["down", "blackhole", "orphan"])
def test_rate_limited_traffic_through_a_redis_fault(
    gateway_server, relay, echo_upstream: EchoUpstream, fault: str
) -> None:
    """45 req/s on a rate-limited route, Redis cut after 2 s: all 200; >= 95 % within 300 ms."""
    make_service("echo", echo_upstream.url, route_prefix="/api/v1/echo")
    make_public_app("/api/v1/*", rate_limit=1_000_000)
    redis = relay(os.environ["REDIS_URL"])
    prefix = f"gw-f-{time.time_ns()}"
    gw = gateway_server(
        workers=WORKERS,
        env={"REDIS_URL": through(os.environ["REDIS_URL"], redis), "GATEWAY_CACHE_PREFIX": prefix},
    )
    url = gw.url + "/api/v1/echo/x"
    for _ in range(10):  # both workers connected to Redis before the clock starts
        assert requests.get(url, timeout=5).status_code == 200
    results: list[tuple[float, float, int]] = []  # (sent at, latency, status)
    threads = 9
    start = time.monotonic()

    def client(offset: float) -> None:
        interval = threads / RATE_PER_S
        next_at = start + offset
        with requests.Session() as session:
            while next_at - start < DURATION_S:
                time.sleep(max(0.0, next_at - time.monotonic()))
                sent = time.monotonic()
                try:
                    status = session.get(url, timeout=5).status_code
                except requests.RequestException:
                    status = 0
                results.append((sent - start, time.monotonic() - sent, status))
                next_at += interval

    clients = [threading.Thread(target=client, args=(i / RATE_PER_S,), daemon=True) for i in range(threads)]
    for thread in clients:
        thread.start()
    time.sleep(FAULT_AT_S)
    redis.set_mode(fault)
    time.sleep(1.0)
    counted_during_fault = redis_count(prefix)
    for thread in clients:
        thread.join(DURATION_S + 10)

    latencies = sorted(latency for _, latency, _ in results)
    statuses = {status for _, _, status in results}
    within_300 = sum(latency <= 0.300 for latency in latencies) / len(latencies)
    paid = sum(latency >= REDIS_TIMEOUT_S for latency in latencies)
    print(
        f"\n[{fault}] {len(latencies)} requests: {within_300:.1%} within 300 ms, "
        f"{paid} >= {REDIS_TIMEOUT_S * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    assert statuses == {200}, "fail open: every request served"
    assert len(latencies) >= 0.9 * RATE_PER_S * DURATION_S
    assert within_300 >= 0.95
    if fault != "down":
        assert "Rate-limit cache unavailable" in gw.log()
    if fault == "orphan":
        # New connections work: after the 5 s retry interval each worker counts in Redis again.
        assert redis_count(prefix) > counted_during_fault


def redis_count(prefix: str) -> int:
    """Return the sum of the rate-limit counters the gateway under test keeps in Redis."""
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        return sum(int(client.get(key) or 0) for key in client.scan_iter(match=f"{prefix}:*rl:*"))
    finally:
        client.close()
