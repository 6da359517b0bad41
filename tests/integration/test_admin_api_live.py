"""Admin API changes reach live gateway workers: new routes serve, revoked keys stop, within a second."""

from __future__ import annotations

import time

import requests
from rest_framework.authtoken.models import Token

from tests.support.admin_api import make_user
from tests.support.builders import make_app, make_key, make_service

PROPAGATION_S = 1.0  # SPEC §6
# Each probe is four requests on a shared, loaded CI machine; the bound itself is
# measured precisely by the routing tests (test_propagation*).
SLACK_S = 1.0


def wait_for(check, timeout_s: float = 5.0) -> float:  # type: ignore[no-untyped-def]  # a predicate
    """Poll ``check()`` until it is true; return the seconds it took (fail after ``timeout_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout_s} s")


def test_changes_through_the_api_reach_every_worker(gateway_server, echo_upstream) -> None:
    staff = make_user("ops")
    admin = {"Authorization": f"Token {Token.objects.create(user=staff).key}"}
    make_service("echo", echo_upstream.url)
    app = make_app("web", entries=[{"path": "/api/v1/*"}])
    key, plaintext = make_key(app)
    gateway = gateway_server(workers=2)
    api = gateway.url + "/admin"

    def served(path: str, api_key: str = plaintext) -> int:
        return requests.get(gateway.url + path, headers={"X-API-Key": api_key}, timeout=5).status_code

    wait_for(lambda: served("/api/v1/echo/ping") == 200)
    assert echo_upstream.last.header("X-API-Key") is None  # the key is not forwarded

    # A service created through the API routes on every worker within the bound.
    other = requests.post(
        f"{api}/routing/services",
        json={"service_name": "other", "default_url": echo_upstream.url, "upstream_prefix": ""},
        headers=admin,
        timeout=10,
    )
    assert other.status_code == 201, other.text
    took = wait_for(lambda: all(served("/api/v1/other/hello") == 200 for _ in range(4)))
    assert took < PROPAGATION_S + SLACK_S
    assert echo_upstream.last.target == "/hello"

    # A key issued through the API works; revoked through the API, it stops working.
    issued = requests.post(
        f"{api}/access/applications/{app.id}/api-keys", json={"name": "ci"}, headers=admin, timeout=10
    )
    assert issued.status_code == 201
    new_key = issued.json()["key"]
    wait_for(lambda: served("/api/v1/echo/ping", new_key) == 200)
    revoked = requests.delete(f"{api}/access/applications/{app.id}/api-keys/{key.id}", headers=admin, timeout=10)
    assert revoked.status_code == 200
    took = wait_for(lambda: all(served("/api/v1/echo/ping") == 401 for _ in range(4)))
    assert took < PROPAGATION_S + SLACK_S
    assert served("/api/v1/echo/ping", new_key) == 200


def test_cache_refresh_reloads_live_workers(gateway_server) -> None:
    staff = make_user("ops")
    admin = {"Authorization": f"Token {Token.objects.create(user=staff).key}"}
    make_service("echo", "http://127.0.0.1:9")
    gateway = gateway_server(workers=1)
    url = gateway.url + "/admin/cache"

    before = requests.get(url, headers=admin, timeout=10).json()
    assert before["loaded"] is True
    assert before["counts"]
    assert before["version"] == before["config_version"]
    refreshed = requests.post(url + "/refresh", headers=admin, timeout=10)
    assert refreshed.status_code == 202

    def reloaded() -> bool:
        state = requests.get(url, headers=admin, timeout=10).json()
        return state["version"] > before["version"] and state["up_to_date"]

    assert wait_for(reloaded) < PROPAGATION_S + SLACK_S


def test_cache_describes_every_worker_of_the_node(gateway_server) -> None:
    staff = make_user("ops")
    admin = {"Authorization": f"Token {Token.objects.create(user=staff).key}"}
    make_service("echo", "http://127.0.0.1:9")
    gateway = gateway_server(workers=2)
    url = gateway.url + "/admin/cache"

    def node() -> dict:
        return requests.get(url, headers=admin, timeout=10).json()

    # Both workers load a snapshot at start and publish its version.
    wait_for(lambda: len(node()["workers"] or []) == 2)
    before = node()
    assert before["all_workers_up_to_date"] is True
    assert {w["version"] for w in before["workers"]} == {before["config_version"]}

    assert requests.post(url + "/refresh", headers=admin, timeout=10).status_code == 202

    def every_worker_reloaded() -> bool:
        state = node()
        versions = {w["version"] for w in state["workers"] or []}
        return len(state["workers"]) == 2 and versions == {state["config_version"]} and state["all_workers_up_to_date"]

    assert wait_for(every_worker_reloaded) < PROPAGATION_S + SLACK_S
    assert node()["config_version"] > before["config_version"]
