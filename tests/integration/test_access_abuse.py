"""Key abuse and argon2 cost through a live gevent gateway: wrong-key floods and first-time bursts."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from argon2 import PasswordHasher

from tests.support.builders import make_app, make_key, make_service
from tests.support.servers import GunicornProcess
from tests.support.upstream import EchoUpstream

FAILED_LINE = "API key verification failed"


class SteadyClient:
    """A well-behaved client calling in a loop; records every status and latency."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.latencies_s: list[float] = []
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            started = time.perf_counter()
            response = session.get(self.url, headers={"X-API-Key": self.key}, timeout=30)
            self.latencies_s.append(time.perf_counter() - started)
            self.statuses.append(response.status_code)
            time.sleep(0.01)


def argon2_cost_s() -> float:
    """Measure one argon2id verification with the production parameters, here and now."""
    hasher = PasswordHasher()
    stored = hasher.hash("x")
    started = time.perf_counter()
    hasher.verify(stored, "x")
    return time.perf_counter() - started


@pytest.fixture
def setup(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream
) -> tuple[GunicornProcess, str, list[str]]:
    """A one-worker gevent gateway, a steady client's key and 12 keys never used yet."""
    make_service("orders", echo_upstream.url)
    app = make_app("busy", entries=[{"path": "/api/v1/orders/*"}])
    _, steady_key = make_key(app, name="steady")
    fresh = [make_key(app, name=f"fresh {i}")[1] for i in range(12)]
    return gateway_server(workers=1), steady_key, fresh


@pytest.mark.django_db(transaction=True)
def test_a_thousand_wrong_keys_cost_far_less_than_a_thousand_verifications(setup) -> None:
    gateway, steady_key, _ = setup
    url = gateway.url + "/api/v1/orders/1"
    assert requests.get(url, headers={"X-API-Key": steady_key}, timeout=10).status_code == 200
    prefix = steady_key.split(".")[0]
    cost_s = argon2_cost_s()
    sessions = [requests.Session() for _ in range(8)]

    def guess(i: int) -> requests.Response:
        return sessions[i % 8].get(url, headers={"X-API-Key": f"{prefix}.guess-{i:04d}-{'x' * 30}"}, timeout=30)

    with SteadyClient(url, steady_key) as steady:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(guess, range(1000)))
        elapsed_s = time.monotonic() - started
    assert {r.status_code for r in answers} == {401}
    assert {r.json()["error"]["code"] for r in answers} == {"invalid_api_key"}
    verifications = gateway.log().count(FAILED_LINE)
    assert verifications <= 10, verifications  # the failure budget, not 1,000
    assert "Retry-After" in answers[-1].headers
    # 1,000 verifications on a 2-thread pool would take at least 500 x cost_s.
    assert elapsed_s < 100 * cost_s + 10, (elapsed_s, cost_s)
    assert steady.statuses and set(steady.statuses) == {200}


@pytest.mark.django_db(transaction=True)
def test_burst_of_first_time_keys_does_not_stall_other_clients(setup) -> None:
    gateway, steady_key, burst_keys = setup
    url = gateway.url + "/api/v1/orders/1"
    assert requests.get(url, headers={"X-API-Key": steady_key}, timeout=10).status_code == 200
    cost_s = argon2_cost_s()
    with SteadyClient(url, steady_key) as steady:
        time.sleep(0.3)
        before = len(steady.latencies_s)
        started = time.monotonic()
        with ThreadPoolExecutor(len(burst_keys)) as pool:
            statuses = list(
                pool.map(lambda k: requests.get(url, headers={"X-API-Key": k}, timeout=60).status_code, burst_keys)
            )
        burst_s = time.monotonic() - started
        during = steady.latencies_s[before:]
    assert statuses == [200] * len(burst_keys)
    assert set(steady.statuses) == {200}
    # On the loop, 12 verifications would queue the steady client behind ~11 x cost_s.
    assert during, "the steady client got no answer during the burst"
    assert max(during) < max(3 * cost_s, 0.1) + 0.25, (max(during), cost_s, burst_s)
    assert statistics.median(during) < cost_s + 0.1
