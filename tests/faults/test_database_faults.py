"""The gateway and the admin panel when PostgreSQL goes down, hangs or leaves connections orphaned (SPEC §6).

Every test puts a relay (tests/faults/relay.py) between the product's processes and
the real PostgreSQL; the test process itself talks to the database directly.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.faults.conftest import through
from tests.integration.test_queue_fixtures import Broker, default_broker_fixture  # noqa: F401 - fixtures
from tests.support.admin_api import make_user, token_header
from tests.support.backends import requires_postgres
from tests.support.builders import make_public_app, make_service
from tests.support.servers import test_database_url as database_url
from tests.support.upstream import EchoUpstream

pytestmark = [pytest.mark.django_db(transaction=True), requires_postgres]

WORKERS = 2
PER_WORKER_LIMIT = 3  # SPEC §6: database connections per gateway worker, the watcher's included


class Traffic:
    """Proxied requests in a loop from a background thread; every answer is kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                try:
                    self.statuses.append(session.get(self.url, timeout=5).status_code)
                except requests.RequestException:
                    self.statuses.append(0)
                time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def readyz(url: str) -> tuple[int, dict]:
    try:
        response = requests.get(url + "/readyz", timeout=5)
    except requests.RequestException:
        return 0, {}
    return response.status_code, response.json()


def wait_for(predicate, timeout_s: float, step_s: float = 0.05) -> float | None:  # type: ignore[no-untyped-def]  # a callable
    """Return the seconds until ``predicate()`` held, or None after ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(step_s)
    return None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["down", "blackhole", "orphan"])
def test_gateway_serves_through_a_database_fault_and_follows_changes_after_it(
    gateway_server, relay, echo_upstream: EchoUpstream, fault: str
) -> None:
    """Every proxied request served; /readyz 503 within 5 s; a change served within 5 s of recovery."""
    make_service("echo", echo_upstream.url, route_prefix="/api/v1/echo")
    make_public_app("/api/v1/*")
    database = relay(database_url())
    gw = gateway_server(workers=WORKERS, env={"DATABASE_URL": through(database_url(), database)})
    assert readyz(gw.url)[0] == 200

    with Traffic(gw.url + "/api/v1/echo/ping") as traffic:
        time.sleep(0.5)
        database.set_mode(fault)
        not_ready_s = wait_for(lambda: readyz(gw.url)[0] == 503, timeout_s=8)
        stale_s = wait_for(lambda: readyz(gw.url)[1].get("checks", {}).get("snapshot", "").startswith("stale"), 10)
        body = readyz(gw.url)[1]
        database.set_mode("up")
        make_service("late", echo_upstream.url, route_prefix="/api/v1/late")
        served_s = wait_for(
            lambda: all(requests.get(gw.url + "/api/v1/late/x", timeout=5).status_code == 200 for _ in range(6)), 8
        )
        time.sleep(0.3)

    assert not_ready_s is not None and not_ready_s <= 5.0, f"/readyz still 200 after the {fault}"
    if fault != "orphan":  # an orphaned connection is dropped and replaced before 5 s pass
        assert stale_s is not None, body
        assert "stale: config version not confirmed" in body["checks"]["snapshot"], body
    assert served_s is not None and served_s <= 5.0, f"change not served within 5 s of recovery ({fault})"
    assert traffic.statuses and set(traffic.statuses) == {200}, (
        f"{traffic.statuses.count(200)} of {len(traffic.statuses)}"
    )
    print(f"\n[{fault}] readyz 503 after {not_ready_s:.2f}s, stale after {stale_s}, change served {served_s:.2f}s")


@pytest.mark.timeout(60)
def test_keep_alive_clients_on_a_queue_route_hold_no_database_connection(
    gateway_server, relay, default_broker: Broker
) -> None:
    """30 keep-alive clients POSTing to a queue route: at most 3 connections per worker, none kept per client."""
    make_service("notify", "queue://sms")
    make_public_app("/api/v1/notify/*", methods=["POST"])
    database = relay(database_url())
    gw = gateway_server(
        workers=WORKERS, env={"DATABASE_URL": through(database_url(), database), **default_broker.env()}
    )
    sessions = [requests.Session() for _ in range(30)]
    peak = 0

    def post(session: requests.Session) -> int:
        return session.post(
            gw.url + "/api/v1/notify/send", json={"to": "+491511", "message": "hi"}, timeout=15
        ).status_code

    with ThreadPoolExecutor(max_workers=30) as pool:
        for _ in range(3):
            assert set(pool.map(post, sessions)) == {202}
            peak = max(peak, database.open_connections())
    time.sleep(1.0)  # the clients stay connected, idle
    held = database.open_connections()
    for session in sessions:
        session.close()

    assert peak <= PER_WORKER_LIMIT * WORKERS, peak
    assert held <= PER_WORKER_LIMIT * WORKERS, held
    print(f"\n30 keep-alive clients: peak {peak} database connections, {held} while they idle ({WORKERS} workers)")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("app", ["admin_panel.wsgi:application", "gateway_project.wsgi:application"])
def test_parallel_admin_calls_stay_within_the_pool_and_a_refusing_database_is_503(
    gateway_server, relay, app: str
) -> None:
    """50 parallel admin API calls: connections <= the pool (2 per process); database down: 503, never 500."""
    user = make_user("ops", is_staff=True)
    headers = {"Authorization": token_header(user)}
    for i in range(5):
        make_service(f"svc{i}", f"http://127.0.0.1:{9000 + i}", route_prefix=f"/api/v1/svc{i}")
    database = relay(database_url())
    gw = gateway_server(workers=WORKERS, app=app, env={"DATABASE_URL": through(database_url(), database)})
    peak = 0

    def call(_: int) -> int:
        nonlocal peak
        status = requests.get(gw.url + "/admin/routing/services", headers=headers, timeout=15).status_code
        peak = max(peak, database.open_connections())
        return status

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(call, range(50)))
    database.set_mode("down")
    refused = [requests.get(gw.url + "/admin/routing/services", headers=headers, timeout=15) for _ in range(4)]

    assert statuses == [200] * 50
    # The pool of 2 per worker; a gateway worker may add its watcher's LISTEN connection.
    limit = 2 * WORKERS + (WORKERS if app.startswith("gateway_project") else 0)
    assert peak <= limit, (peak, limit)
    assert {r.status_code for r in refused} == {503}, [r.text for r in refused]
    assert all(r.json()["error"]["code"] == "database_unavailable" for r in refused)
    print(f"\n50 parallel admin calls ({app}): peak {peak} database connections")
