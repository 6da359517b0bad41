"""Proxied requests make no database queries in steady state (SPEC §6), counted in live workers.

The gateway runs ``tests.support.probe_wsgi``: the real application plus a counter of
the queries executed while a request is being served, written per worker to
``PROBE_DIR`` (background work such as the config watcher is not on the request path
and is not counted).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support.builders import make_app, make_key, make_public_app, make_service
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.django_db(transaction=True)


def query_counts(probe_dir: Path) -> dict[str, int]:
    return {path.name: int(path.read_text() or 0) for path in probe_dir.glob("queries-*")}


def test_steady_state_requests_make_no_database_queries(
    gateway_server, echo_upstream: EchoUpstream, tmp_path: Path
) -> None:
    make_service("open", echo_upstream.url, versions=[("v1", echo_upstream.url, 50), ("v2", echo_upstream.url, 50)])
    make_service("private", echo_upstream.url)
    make_public_app("/api/v1/open/*")
    shop = make_app("shop", entries=[{"path": "/api/v1/private/*", "rate_limit": 100_000}])
    _, key = make_key(shop)
    gw = gateway_server(workers=2, app="tests.support.probe_wsgi:application", env={"PROBE_DIR": str(tmp_path)})

    # The counter counts: one query on the request path shows up for the worker that ran it.
    probe = requests.get(gw.url + "/__probe__/query", timeout=5)
    assert query_counts(tmp_path) == {f"queries-{probe.headers['X-Probe-Worker']}": 1}

    def mixed_requests(client: requests.Session, rounds: int) -> set[str]:
        workers = set()
        for i in range(rounds):
            for response in (
                client.get(gw.url + f"/api/v1/open/items/{i}?q={i}", timeout=10),
                client.post(gw.url + "/api/v1/open/items", data=b'{"n": 1}', timeout=10),
                client.get(gw.url + "/api/v1/open/x", headers={"X-Service-Version": "v2"}, timeout=10),
                client.get(gw.url + "/api/v1/private/orders", headers={"X-API-Key": key}, timeout=10),
                client.get(gw.url + "/api/v1/private/orders", timeout=10),  # 401, no key
                client.get(gw.url + "/api/v1/nowhere", timeout=10),  # 404
            ):
                assert response.status_code in (200, 401, 404)
                workers.add(response.headers["X-Probe-Worker"])
        return workers

    # Warm up: each worker has verified the key once (argon2, no database either way).
    with requests.Session() as first, requests.Session() as second:
        mixed_requests(first, 3)
        mixed_requests(second, 3)
    before = query_counts(tmp_path)
    served_by: set[str] = set()
    for _ in range(4):
        with requests.Session() as client:
            client.headers["Connection"] = "close"  # a new connection each time: spread over the workers
            served_by |= mixed_requests(client, 15)
    after = query_counts(tmp_path)

    print(f"\n{4 * 15 * 6} requests over workers {sorted(served_by)}: queries before {before}, after {after}")
    assert len(echo_upstream.received) >= 4 * 15 * 4
    assert after == before
