"""The SPEC §4.5 matrix through a live gateway with real keys and a real upstream."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from access.models import ApiKey
from access.services import api_key_revoke
from tests.support.builders import make_app, make_entry, make_key, make_service
from tests.support.servers import GunicornProcess
from tests.support.upstream import EchoUpstream


@dataclass
class World:
    gateway: GunicornProcess
    upstream: EchoUpstream
    keys: dict[str, str]
    app_ids: dict[str, str]

    def call(
        self, method: str, path: str, key: str | None = None, headers: dict[str, str] | None = None
    ) -> requests.Response:
        sent = dict(headers or {})
        if key is not None:
            sent["X-API-Key"] = self.keys.get(key, key)
        return requests.request(method, self.gateway.url + path, headers=sent, timeout=10)


@pytest.fixture
def world(gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream) -> World:
    url = echo_upstream.url
    make_service("orders", url, versions=[("v1", url, 100), ("v2", url, 0), ("v3", url, 0)])
    make_service("billing", url)
    make_service("catalog", url)
    mine = make_app(
        "mine",
        allowed_services=["orders", "catalog"],
        allowed_versions=["v1", "v2"],
        entries=[
            {"path": "/api/v1/orders/{id}", "methods": ["GET"]},
            {"path": "/api/v1/orders/*", "methods": ["POST"], "versions": ["v2"]},
        ],
    )
    other = make_app("other", entries=[{"path": "/api/v1/billing/*"}])
    make_app("public", entries=[{"path": "/api/v1/catalog/*", "methods": ["GET"], "is_public": True}])
    dormant = make_app("dormant", is_active=False, entries=[{"path": "/api/v1/orders/*"}])
    keys = {
        "mine": make_key(mine)[1],
        "other": make_key(other)[1],
        "revoked": make_key(mine, name="revoked", is_active=False)[1],
        "expired": make_key(mine, name="expired", expires_at=timezone.now() - timedelta(minutes=1))[1],
        "dormant": make_key(dormant)[1],
    }
    prefix = keys["mine"].split(".")[0]
    keys["wrong"] = f"{prefix}.{'A' * 43}"
    keys["unknown"] = f"gk_000000000000.{'A' * 43}"
    gateway = gateway_server(workers=1)
    return World(gateway, echo_upstream, keys, {"mine": str(mine.id), "other": str(other.id)})


MATRIX = [
    # method, path, key, pinned version, status, code
    ("GET", "/api/v1/orders/1", "wrong", None, 401, "invalid_api_key"),
    ("GET", "/api/v1/orders/1", "unknown", None, 401, "invalid_api_key"),
    ("GET", "/api/v1/orders/1", "not-a-key", None, 401, "invalid_api_key"),
    ("GET", "/api/v1/orders/1", "revoked", None, 401, "invalid_api_key"),
    ("GET", "/api/v1/orders/1", "dormant", None, 401, "invalid_api_key"),
    ("GET", "/api/v1/orders/1", "expired", None, 401, "expired_api_key"),
    ("GET", "/api/v1/orders/1", None, None, 401, "missing_api_key"),
    ("GET", "/api/v1/billing/1", "mine", None, 403, "service_not_allowed"),
    ("GET", "/api/v1/orders/1", "other", None, 403, "endpoint_not_allowed"),
    ("DELETE", "/api/v1/orders/1", "mine", None, 403, "endpoint_not_allowed"),
    ("GET", "/api/v1/orders/1/lines", "mine", None, 403, "endpoint_not_allowed"),
    ("GET", "/api/v1/orders/1", "mine", "v3", 403, "version_not_allowed"),
    ("POST", "/api/v1/orders/1", "mine", "v1", 403, "version_not_allowed"),
    ("GET", "/api/v1/catalog/items", "wrong", None, 401, "invalid_api_key"),
    ("POST", "/api/v1/catalog/items", None, None, 401, "missing_api_key"),
]


@pytest.mark.django_db(transaction=True)
def test_refusals_follow_the_spec_matrix(world: World) -> None:
    failures = []
    for method, path, key, pinned, status, code in MATRIX:
        headers = {"X-Service-Version": pinned} if pinned else {}
        response = world.call(method, path, key, headers)
        body = response.json()
        if (response.status_code, body.get("error", {}).get("code")) != (status, code):
            failures.append((method, path, key, pinned, response.status_code, body))
            continue
        assert body["error"]["request_id"] == response.headers["X-Request-ID"]
        assert set(body["error"]) == {"code", "message", "request_id"}
        for secret in world.keys.values():
            assert secret.split(".", 1)[1] not in response.text
    assert failures == []
    assert world.upstream.received == []  # nothing refused reached the upstream


@pytest.mark.django_db(transaction=True)
def test_valid_key_reaches_the_upstream_with_consumer_identity(world: World) -> None:
    response = world.call(
        "GET",
        "/api/v1/orders/1",
        "mine",
        {"X-Consumer-ID": "spoofed", "X-Consumer-Name": "spoofed", "X-Gateway-Whatever": "x"},
    )
    assert response.status_code == 200, response.text
    seen = world.upstream.last
    assert seen.header("X-Consumer-ID") == world.app_ids["mine"]
    assert seen.header("X-Consumer-Name") == "mine"
    assert seen.header("X-API-Key") is None
    assert [v for k, v in seen.headers if k.lower() == "x-consumer-id"] == [world.app_ids["mine"]]
    assert seen.header("X-Gateway-Whatever") is None


@pytest.mark.django_db(transaction=True)
def test_entry_and_application_version_lists(world: World) -> None:
    assert world.call("POST", "/api/v1/orders/1", "mine", {"X-Service-Version": "v2"}).status_code == 200
    assert world.call("GET", "/api/v1/orders/1", "mine", {"X-Service-Version": "v2"}).status_code == 200
    assert world.upstream.last.method == "GET"
    # Unpinned: the weighted choice only considers versions the caller may use (v1).
    response = world.call("GET", "/api/v1/orders/1", "mine")
    assert response.status_code == 200 and response.headers["X-Service-Version"] == "v1"


@pytest.mark.django_db(transaction=True)
def test_public_endpoint_is_open_and_a_valid_key_identifies_the_caller(world: World) -> None:
    anonymous = world.call("GET", "/api/v1/catalog/items", None, {"X-Consumer-ID": "spoofed"})
    assert anonymous.status_code == 200
    assert world.upstream.last.header("X-Consumer-ID") is None
    keyed = world.call("GET", "/api/v1/catalog/items", "other")
    assert keyed.status_code == 200
    assert world.upstream.last.header("X-Consumer-Name") == "other"
    assert world.upstream.last.header("X-Consumer-ID") == world.app_ids["other"]


def wait_for_status(call: Callable[[], requests.Response], status: int, timeout_s: float = 5.0) -> float:
    """Poll until ``call`` answers ``status``; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if call().status_code == status:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"still not {status} after {timeout_s}s")


@pytest.mark.django_db(transaction=True)
def test_revoked_key_stops_working_within_the_propagation_bound(world: World) -> None:
    assert world.call("GET", "/api/v1/orders/1", "mine").status_code == 200
    prefix = world.keys["mine"].split(".")[0]
    api_key_revoke(key=ApiKey.objects.get(key_prefix=prefix))
    took = wait_for_status(lambda: world.call("GET", "/api/v1/orders/1", "mine"), 401)
    assert took < 1.5


@pytest.mark.django_db(transaction=True)
def test_deleted_key_stops_working(world: World) -> None:
    assert world.call("GET", "/api/v1/billing/1", "other").status_code == 200
    ApiKey.objects.get(key_prefix=world.keys["other"].split(".")[0]).delete()
    wait_for_status(lambda: world.call("GET", "/api/v1/billing/1", "other"), 401)


@pytest.mark.django_db(transaction=True)
def test_unrelated_edit_does_not_reverify_keys(world: World) -> None:
    """The memo survives a snapshot swap: one argon2 verification in the gateway's log."""
    prefix = world.keys["mine"].split(".")[0]
    assert world.call("GET", "/api/v1/orders/1", "mine").status_code == 200
    other_prefix = world.keys["other"].split(".")[0]
    # A config change the gateway must pick up: a new whitelist entry for "other".
    make_entry(ApiKey.objects.get(key_prefix=other_prefix).application, "/api/v1/orders/{id}")
    wait_for_status(lambda: world.call("GET", "/api/v1/orders/1", "other"), 200)
    for _ in range(5):
        assert world.call("GET", "/api/v1/orders/1", "mine").status_code == 200
    assert world.gateway.log().count(f"API key {prefix} verified") == 1


@pytest.mark.django_db(transaction=True)
def test_expiry_is_checked_on_every_request(world: World) -> None:
    key = ApiKey.objects.get(key_prefix=world.keys["mine"].split(".")[0])
    # The reload picks up the new expiry while it is still ahead; then only the clock changes.
    soon = timezone.now() + timedelta(seconds=2)
    key.expires_at = soon
    key.save(update_fields=["expires_at", "updated_at"])
    wait_for_status(lambda: world.call("GET", "/api/v1/orders/1", "mine"), 200)
    time.sleep(max(0.0, (soon - timezone.now()).total_seconds()) + 0.2)
    response = world.call("GET", "/api/v1/orders/1", "mine")
    assert response.status_code == 401 and response.json()["error"]["code"] == "expired_api_key"


@pytest.mark.django_db(transaction=True)
def test_last_used_at_is_recorded_off_the_request_path(world: World) -> None:
    prefix = world.keys["mine"].split(".")[0]
    assert ApiKey.objects.get(key_prefix=prefix).last_used_at is None
    for _ in range(3):
        assert world.call("GET", "/api/v1/orders/1", "mine").status_code == 200
    deadline = time.monotonic() + 10
    while ApiKey.objects.get(key_prefix=prefix).last_used_at is None:
        assert time.monotonic() < deadline, "last_used_at was not written within 10 s"
        time.sleep(0.2)
    assert ApiKey.objects.get(key_prefix=world.keys["other"].split(".")[0]).last_used_at is None
