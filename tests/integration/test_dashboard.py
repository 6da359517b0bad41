"""The traffic dashboard in the admin: who may see it, and what it shows."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from admin_panel import dashboard
from gateway_core import traffic
from gateway_core.traffic import FileTrafficStore, RedisTrafficStore, TrafficRecorder
from tests.support.backends import requires_redis
from tests.support.builders import make_public_app, make_service
from tests.support.upstream import EchoUpstream

pytestmark = [pytest.mark.django_db, pytest.mark.urls("admin_panel.urls")]


@pytest.fixture
def traffic_dir(tmp_path: Path, settings) -> Iterator[Path]:
    """A file traffic store in a temporary folder, as a deployment without Redis has."""
    settings.REDIS_URL = None
    settings.GATEWAY_TRAFFIC_DIR = tmp_path
    traffic.traffic_store.cache_clear()
    dashboard._queue_memo.clear()
    yield tmp_path
    traffic.traffic_store.cache_clear()


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_user("ops", password="x-long-password-1", is_staff=True)
    user.groups.set(Group.objects.filter(name="gateway-viewer"))
    client.force_login(user)
    return client


def record(directory: Path, *requests: tuple[str, int, float]) -> None:
    recorder = TrafficRecorder(FileTrafficStore(directory))
    recorder._flusher_pid = os.getpid()  # flushed by hand below
    for service, status, duration_s in requests:
        recorder.record(service, status, duration_s)
    recorder.flush()


def test_dashboard_renders_for_staff_with_debug_off(staff_client, traffic_dir: Path) -> None:
    assert settings.DEBUG is False
    record(traffic_dir, ("orders", 200, 0.02), ("orders", 502, 0.3), ("billing", 200, 0.05))

    response = staff_client.get("/admin/dashboard/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>Health dashboard" in html
    for chart in ("gw-chart-rpm", "gw-chart-errors", "gw-chart-latency", "gw-queues"):
        assert f'id="{chart}"' in html
    assert all(src.startswith("/static/") for src in re.findall(r'<script src="([^"]+)"', html))  # no CDN
    start = html.index('<script id="gw-dashboard-data" type="application/json">') + len(
        '<script id="gw-dashboard-data" type="application/json">'
    )
    payload = json.loads(html[start : html.index("</script>", start)])
    services = {s["service"]: s for s in payload["services"]}
    assert services["orders"]["totals"]["requests"] == 2
    assert services["orders"]["totals"]["error_rate"] == 0.5
    assert services["billing"]["totals"]["requests"] == 1
    assert payload["storage"] == "files (this machine)"


def test_dashboard_data_answers_the_poll_with_json(staff_client, traffic_dir: Path) -> None:
    record(traffic_dir, *[("orders", 200, 0.01)] * 5)
    response = staff_client.get("/admin/dashboard/data")
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    data = response.json()
    assert data["services"][0]["service"] == "orders"
    assert data["services"][0]["requests"][-1] == 5
    assert len(data["minutes"]) == 61
    assert {q["queue"] for q in data["queues"]} == {"email", "sms", "ai", "analytics", "execution"}


@pytest.mark.parametrize("path", ["/admin/dashboard/", "/admin/dashboard/data"])
def test_dashboard_is_refused_to_anonymous_and_non_staff(client, traffic_dir: Path, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")

    user = get_user_model().objects.create_user("clerk", password="x-long-password-1", is_staff=False)
    client.force_login(user)
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert b"gw-dashboard-data" not in response.content


def test_admin_index_links_to_the_dashboard(staff_client, traffic_dir: Path) -> None:
    response = staff_client.get("/admin/")
    assert response.status_code == 200
    assert b'href="/admin/dashboard/"' in response.content
    assert b'id="content-main"' in response.content  # the admin's own index is still there


def test_dashboard_still_renders_when_the_traffic_store_fails(staff_client, traffic_dir: Path, monkeypatch) -> None:
    class Broken:
        def read(self, first_minute: int, last_minute: int):
            raise ConnectionError("redis away")

    monkeypatch.setattr(dashboard, "traffic_store", lambda: Broken())
    response = staff_client.get("/admin/dashboard/data")
    assert response.status_code == 200
    assert response.json()["error"] == "traffic counts unavailable (ConnectionError)"


def test_queue_stats_are_reused_for_a_few_seconds(monkeypatch) -> None:
    calls: list[float] = []

    def fake_stats(timeout_s: float) -> list[dict[str, object]]:
        calls.append(timeout_s)
        return [{"queue": "email", "depth": len(calls), "consumers": 1, "dead_letter_depth": 0}]

    monkeypatch.setattr("queues.selectors.queue_stats", fake_stats)
    dashboard._queue_memo.clear()
    now = time.time()
    assert dashboard.queue_depths(now)[0]["depth"] == 1
    assert dashboard.queue_depths(now + 1)[0]["depth"] == 1
    assert dashboard.queue_depths(now + 10)[0]["depth"] == 2
    assert calls == [dashboard.QUEUE_STATS_TIMEOUT_S] * 2
    dashboard._queue_memo.clear()


def test_live_dashboard_shows_traffic_of_every_gateway_worker(
    gateway_server, echo_upstream: EchoUpstream, tmp_path: Path
) -> None:
    """Gateway workers flush their counts; the admin panel's dashboard, another process, shows them."""
    make_service("orders", echo_upstream.url)
    make_public_app("/api/v1/orders/*")
    user = get_user_model().objects.create_user("ops-live", password="x-long-password-1", is_staff=True)
    user.groups.set(Group.objects.filter(name="gateway-viewer"))
    browser = Client()
    browser.force_login(user)
    session = {"sessionid": browser.cookies["sessionid"].value}
    shared = {"GATEWAY_TRAFFIC_DIR": str(tmp_path / "traffic"), "GATEWAY_CACHE_PREFIX": f"t{uuid.uuid4().hex[:12]}"}
    gateway = gateway_server(workers=2, env=shared)
    panel = gateway_server(workers=1, env=shared, app="admin_panel.wsgi:application")

    for i in range(12):
        path = f"/api/v1/orders/{i}" if i % 4 else "/api/v1/missing"
        requests.get(gateway.url + path, timeout=10, headers={"Connection": "close"})

    deadline = time.monotonic() + 3 * traffic.FLUSH_INTERVAL_S
    totals: dict[str, int] = {}
    while time.monotonic() < deadline and totals != {"orders": 9, "": 3}:
        time.sleep(0.5)
        data = requests.get(panel.url + "/admin/dashboard/data", cookies=session, timeout=10).json()
        totals = {s["service"]: s["totals"]["requests"] for s in data["services"]}
    assert totals == {"orders": 9, "": 3}

    page = requests.get(panel.url + "/admin/dashboard/", cookies=session, timeout=10)
    assert page.status_code == 200
    assert "gw-chart-rpm" in page.text
    assert "Traceback" not in page.text
    anonymous = requests.get(panel.url + "/admin/dashboard/data", timeout=10, allow_redirects=False)
    assert anonymous.status_code == 302


@requires_redis
def test_redis_store_adds_every_workers_counts_into_one_hash_per_minute() -> None:
    import redis

    prefix = f"gwtest:{uuid.uuid4().hex[:8]}:traffic:"
    url = os.environ["REDIS_URL"]
    workers = [RedisTrafficStore(url, prefix), RedisTrafficStore(url, prefix)]
    minute = int(time.time()) // 60
    row = traffic.new_row()
    row[traffic.REQUESTS], row[traffic.SERVER_ERRORS] = 3, 1
    try:
        for store in workers:
            store.add({(minute, "orders"): row, (minute - 1, "svc|with-bar"): row})
        rows = RedisTrafficStore(url, prefix).read(minute - 60, minute)
        assert rows[(minute, "orders")][: traffic.FIRST_BUCKET] == [6, 0, 2]
        assert rows[(minute - 1, "svc|with-bar")][0] == 6
        ttl = redis.Redis.from_url(url).ttl(f"{prefix}{minute}")
        assert 0 < ttl <= traffic.RETENTION_S
    finally:
        client = redis.Redis.from_url(url)
        client.delete(f"{prefix}{minute}", f"{prefix}{minute - 1}")
