"""Rate limits through live gateways: shared in Redis, per process without it, Redis-down policy."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from access.ratelimit import WINDOW_S, window_end
from tests.support.backends import requires_redis
from tests.support.builders import make_app, make_key, make_service
from tests.support.servers import GunicornProcess
from tests.support.upstream import EchoUpstream, closed_port_url

RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def wait_for_fresh_window(counter: str, need_s: float = 15.0) -> None:
    """Sleep into the next window of ``counter`` when too little of this one is left."""
    left = window_end(counter, WINDOW_S, time.time()) - time.time()
    if left < need_s:
        time.sleep(left + 1.1)


def burst(urls: Sequence[str], total: int, headers: dict[str, str], threads: int = 8) -> list[requests.Response]:
    """Send ``total`` GETs spread over ``urls`` from ``threads`` clients at once."""
    sessions = [requests.Session() for _ in range(threads)]

    def one(i: int) -> requests.Response:
        return sessions[i % threads].get(urls[i % len(urls)], headers=headers, timeout=15)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(total)))


def keyed_setup(upstream: EchoUpstream, limit: int) -> tuple[str, str]:
    """Create a service and a keyed, rate-limited entry; return (key, counter value)."""
    make_service("orders", upstream.url)
    app = make_app("limited", entries=[{"path": "/api/v1/orders/*", "rate_limit": limit}])
    _, plaintext = make_key(app)
    entry = app.whitelist.get()
    return plaintext, f"{entry.id}:app:{app.id}"


@requires_redis
@pytest.mark.django_db(transaction=True)
def test_two_gateways_share_exact_counts_in_redis(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream
) -> None:
    limit = 20
    key, counter = keyed_setup(echo_upstream, limit)
    env = {"REDIS_URL": os.environ["REDIS_URL"], "GATEWAY_CACHE_PREFIX": f"gw-rl-{time.time_ns()}"}
    first = gateway_server(workers=2, env=env)
    second = gateway_server(workers=2, env=env)
    wait_for_fresh_window(counter)
    urls = [first.url + "/api/v1/orders/1", second.url + "/api/v1/orders/1"]
    responses = burst(urls, 10 * limit, {"X-API-Key": key})
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == limit, statuses
    assert statuses.count(429) == 9 * limit
    assert len(echo_upstream.received) == limit  # what reached the upstream, exactly
    for response in responses:
        assert all(name in response.headers for name in RATE_HEADERS), response.headers
        assert response.headers["RateLimit-Limit"] == str(limit)
    refused = [r for r in responses if r.status_code == 429]
    assert {r.json()["error"]["code"] for r in refused} == {"rate_limited"}
    assert all(r.headers["Retry-After"] == r.headers["RateLimit-Reset"] for r in refused)
    assert all(1 <= int(r.headers["Retry-After"]) <= WINDOW_S for r in refused)
    remaining = sorted(int(r.headers["RateLimit-Remaining"]) for r in responses if r.status_code == 200)
    assert remaining == list(range(limit))


@pytest.mark.django_db(transaction=True)
def test_without_redis_the_limit_is_exact_across_the_nodes_workers(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream, tmp_path
) -> None:
    """SPEC §4.6: the embedded default lets N requests through per window, not N per worker."""
    limit = 10
    key, counter = keyed_setup(echo_upstream, limit)
    env = {"REDIS_URL": "", "GATEWAY_RATELIMIT_DB": str(tmp_path / "ratelimit.sqlite3")}
    first = gateway_server(workers=2, env=env)
    second = gateway_server(workers=2, env=env)  # another gunicorn on the same machine shares the count
    wait_for_fresh_window(counter)
    urls = [first.url + "/api/v1/orders/1", second.url + "/api/v1/orders/1"]
    responses = burst(urls, 12 * limit, {"X-API-Key": key})
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == limit, statuses
    assert len(echo_upstream.received) == limit
    remaining = sorted(int(r.headers["RateLimit-Remaining"]) for r in responses if r.status_code == 200)
    assert remaining == list(range(limit))


@pytest.mark.django_db(transaction=True)
def test_anonymous_public_calls_count_per_client_ip(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream
) -> None:
    make_service("catalog", echo_upstream.url)
    app = make_app("open", entries=[{"path": "/api/v1/catalog/*", "rate_limit": 3, "is_public": True}])
    entry = app.whitelist.get()
    gateway = gateway_server(workers=1, env={"REDIS_URL": ""})
    wait_for_fresh_window(f"{entry.id}:ip:127.0.0.1")
    statuses = [requests.get(gateway.url + "/api/v1/catalog/x", timeout=10).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


@pytest.mark.django_db(transaction=True)
def test_redis_down_fails_open_counting_per_process(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream
) -> None:
    limit = 3
    key, counter = keyed_setup(echo_upstream, limit)
    dead_redis = closed_port_url().replace("http://", "redis://") + "/0"
    gateway = gateway_server(workers=1, env={"REDIS_URL": dead_redis, "GATEWAY_RATELIMIT_FAIL_OPEN": "true"})
    wait_for_fresh_window(counter)
    started = time.monotonic()
    responses = [
        requests.get(gateway.url + "/api/v1/orders/1", headers={"X-API-Key": key}, timeout=10) for _ in range(6)
    ]
    assert [r.status_code for r in responses] == [200] * limit + [429] * 3
    assert all("RateLimit-Remaining" in r.headers for r in responses)
    assert time.monotonic() - started < 5  # a dead Redis is not waited for on every request
    assert "Rate-limit cache unavailable" in gateway.log()


@pytest.mark.django_db(transaction=True)
def test_redis_down_fails_closed_when_configured(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream
) -> None:
    key, _ = keyed_setup(echo_upstream, 100)
    dead_redis = closed_port_url().replace("http://", "redis://") + "/0"
    gateway = gateway_server(workers=1, env={"REDIS_URL": dead_redis, "GATEWAY_RATELIMIT_FAIL_OPEN": "false"})
    response = requests.get(gateway.url + "/api/v1/orders/1", headers={"X-API-Key": key}, timeout=10)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert response.headers["Retry-After"] == "5"
    assert echo_upstream.received == []


@pytest.mark.django_db(transaction=True)
def test_unlimited_entry_carries_no_rate_headers(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream
) -> None:
    make_service("orders", echo_upstream.url)
    app = make_app("free", entries=[{"path": "/api/v1/orders/*"}])
    _, key = make_key(app)
    gateway = gateway_server(workers=1, env={"REDIS_URL": ""})
    response = requests.get(gateway.url + "/api/v1/orders/1", headers={"X-API-Key": key}, timeout=10)
    assert response.status_code == 200
    assert not [name for name in RATE_HEADERS if name in response.headers]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("trusted", "separate"), [("127.0.0.1/32", True), ("", False)])
def test_forwarded_for_counts_only_from_trusted_proxies(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream, trusted: str, separate: bool
) -> None:
    """Behind a trusted proxy each client IP has its own counter; otherwise X-Forwarded-For is ignored."""
    make_service("catalog", echo_upstream.url)
    app = make_app("open", entries=[{"path": "/api/v1/catalog/*", "rate_limit": 1, "is_public": True}])
    entry = app.whitelist.get()
    gateway = gateway_server(workers=1, env={"REDIS_URL": "", "GATEWAY_TRUSTED_PROXIES": trusted})
    for ip in ("203.0.113.7", "203.0.113.8", "127.0.0.1"):
        wait_for_fresh_window(f"{entry.id}:ip:{ip}", need_s=5)
    statuses = [
        requests.get(gateway.url + "/api/v1/catalog/x", headers={"X-Forwarded-For": ip}, timeout=10).status_code
        for ip in ("203.0.113.7", "203.0.113.8")
    ]
    assert statuses == ([200, 200] if separate else [200, 429])
