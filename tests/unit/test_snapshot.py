"""Compiling the five tables into a Snapshot, and swapping it in."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from gateway_core import snapshot
from gateway_core.conf import gateway_config
from routing import reload, watcher
from routing.compiler import compile_snapshot
from tests.support.builders import make_app, make_entry, make_key, make_service, make_version

pytestmark = pytest.mark.django_db


def test_only_active_services_and_versions_are_compiled() -> None:
    live = make_service("live", "http://live:80", versions=[("v1", "http://v1:80", 10), ("v2", "http://v2:80", 0)])
    make_version(live, "v3", "http://v3:80", is_active=False)
    make_service("off", "http://off:80", is_active=False)

    snap = compile_snapshot(7)

    assert snap.version == 7
    assert [r.service_name for r in snap.routes] == ["live"]
    route = snap.routes_by_prefix["/api/v1/live"]
    assert set(route.versions) == {"v1", "v2"}
    assert [v.version for v in route.weighted_versions] == ["v1"]  # weight 0: only when pinned
    assert route.default.version == "default"
    assert route.default.url == "http://live:80"
    assert snap.counts["services"] == 1


def test_routes_are_ordered_longest_prefix_first_and_upstream_prefix_resolved() -> None:
    make_service("a", "http://a:80")
    make_service("b", "http://b:80", route_prefix="/api/v1/a/deeper", upstream_prefix="")
    make_service("c", "http://c:80", route_prefix="/api/v1/c", upstream_prefix="/internal/c")

    snap = compile_snapshot(1)

    assert snap.routes[0].route_prefix == "/api/v1/a/deeper"
    by_name = {r.service_name: r for r in snap.routes}
    assert by_name["a"].upstream_prefix == "/api/v1/a"  # null: same as the route prefix
    assert by_name["b"].upstream_prefix == ""  # empty: strip
    assert by_name["c"].upstream_prefix == "/internal/c"


def test_queue_urls_compile_to_queue_targets() -> None:
    make_service("mail", "queue://email", versions=[("v2", "http://mail-v2:80")])
    route = compile_snapshot(1).routes_by_prefix["/api/v1/mail"]
    assert route.default.queue == "email"
    assert route.versions["v2"].queue is None


def test_inactive_applications_are_left_out_with_their_keys_and_entries() -> None:
    active = make_app("active", entries=[{"path": "/api/v1/x/*", "is_public": True}])
    inactive = make_app("inactive", is_active=False, entries=[{"path": "/api/v1/*", "is_public": True}])
    key, _ = make_key(active)
    revoked, _ = make_key(active, name="revoked", is_active=False)
    hidden, _ = make_key(inactive)

    snap = compile_snapshot(1)

    assert set(snap.applications) == {str(active.id)}
    assert set(snap.keys) == {key.key_prefix, revoked.key_prefix}
    assert snap.keys[revoked.key_prefix].is_active is False
    assert hidden.key_prefix not in snap.keys
    assert [e.pattern.source for e in snap.public_entries] == ["/api/v1/x/*"]


def test_whitelist_entries_are_ordered_most_specific_first() -> None:
    app = make_app("ordered")
    for path in ("/api/v1/*", "/api/v1/p/{id}", "/api/v1/p/*", "/api/v1/p/special", "/api/v1/p"):
        make_entry(app, path)
    entries = compile_snapshot(1).applications[str(app.id)].entries
    assert [e.pattern.source for e in entries] == [
        "/api/v1/p/special",
        "/api/v1/p/{id}",
        "/api/v1/p",
        "/api/v1/p/*",
        "/api/v1/*",
    ]


def test_key_expiry_and_entry_limits_are_carried() -> None:
    app = make_app("limits", allowed_versions=["v1"], allowed_services=["s"])
    make_entry(app, "/api/v1/s/*", methods=["GET"], versions=["v1"], rate_limit=60)
    expires = timezone.now() + timedelta(days=1)
    key, _ = make_key(app, expires_at=expires)
    snap = compile_snapshot(1)
    compiled_app = snap.applications[str(app.id)]
    assert compiled_app.allowed_versions == frozenset({"v1"})
    entry = compiled_app.entries[0]
    assert (entry.methods, entry.versions, entry.rate_limit) == (frozenset({"GET"}), frozenset({"v1"}), 60)
    assert snap.keys[key.key_prefix].expires_at == expires


def test_service_key_comes_from_the_environment_by_upper_cased_name(settings) -> None:
    settings.GATEWAY = {**settings.GATEWAY, "SERVICE_KEYS": {"BILLING_API": "s3cr3t"}}
    gateway_config.cache_clear()
    try:
        make_service("billing-api", "http://billing:80")
        make_service("other", "http://other:80")
        by_name = {r.service_name: r for r in compile_snapshot(1).routes}
    finally:
        gateway_config.cache_clear()
    assert by_name["billing-api"].service_key == "s3cr3t"
    assert by_name["other"].service_key is None


def test_a_save_bumps_the_version_once_per_transaction(django_capture_on_commit_callbacks) -> None:
    before = reload.revision_read()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        service = make_service("bump", "http://bump:80", versions=[("v1", "http://v1:80"), ("v2", "http://v2:80")])
    assert len(callbacks) == 1
    assert reload.revision_read() == before + 1
    with django_capture_on_commit_callbacks(execute=True):
        service.delete()
    assert reload.revision_read() == before + 2


def test_last_used_bookkeeping_does_not_bump_the_version(django_capture_on_commit_callbacks) -> None:
    key, _ = make_key(make_app("quiet"))
    before = reload.revision_read()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        key.last_used_at = timezone.now()
        key.save(update_fields=["last_used_at"])
    assert callbacks == []
    assert reload.revision_read() == before


def test_refresh_swaps_in_a_new_snapshot_only_when_the_version_changed(django_capture_on_commit_callbacks) -> None:
    reload.refresh(force=True)
    first = snapshot.current()
    assert reload.refresh() is False
    assert snapshot.current() is first
    with django_capture_on_commit_callbacks(execute=True):
        make_service("fresh", "http://fresh:80")
    # No watcher in this process: the change refreshed it directly.
    assert snapshot.current() is not first
    assert "/api/v1/fresh" in snapshot.current().routes_by_prefix
    status = reload.snapshot_status()
    assert status.loaded and status.version == snapshot.current().version and status.last_error is None


def test_a_failed_reload_keeps_the_last_good_snapshot(monkeypatch) -> None:
    reload.refresh(force=True)
    good = snapshot.current()

    def broken(version: int) -> snapshot.Snapshot:
        raise RuntimeError("database went away")

    monkeypatch.setattr(reload, "compile_snapshot", broken)
    with pytest.raises(RuntimeError):
        reload.refresh(force=True)
    assert snapshot.current() is good
    loaded, version, _, last_error, _ = reload.snapshot_status()
    assert loaded and version == good.version
    assert "database went away" in (last_error or "")


def test_gateway_reload_command_bumps_the_version() -> None:
    from io import StringIO

    from django.core.management import call_command

    before = reload.revision_read()
    out = StringIO()
    call_command("gateway_reload", stdout=out)
    assert reload.revision_read() == before + 1
    assert str(before + 1) in out.getvalue()


def test_the_django_urlconf_path_runs_the_same_pipeline(client) -> None:
    make_service("viaurls", "http://127.0.0.1:9")
    reload.refresh(force=True)
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "route_not_found"
    assert response["X-Request-ID"] == response.json()["error"]["request_id"]
    root = client.get("/api/v1")
    assert root.json()["error"]["code"] == "route_not_found"


@pytest.mark.django_db(transaction=True)
def test_the_watcher_keeps_polling_when_its_notification_channel_fails(monkeypatch) -> None:
    """A broken channel (Redis down) degrades to the poll; the channel is tried again later."""
    attempts: list[str] = []

    class BrokenChannel(watcher.Listener):
        def __init__(self) -> None:
            attempts.append("connect")

        def wait(self, timeout_s: float) -> None:
            raise ConnectionError("notification channel went away")

    monkeypatch.setattr(watcher, "CHANNEL_RETRY_S", 0.3)
    reload.refresh(force=True)
    running = watcher.Watcher(poll_s=0.05, make_listener=BrokenChannel).start()
    try:
        # A change nobody announces: rows written without signals, then only the version bumped.
        make_service("unannounced", "http://127.0.0.1:9", is_active=False)
        from routing.models import ServiceConfig

        ServiceConfig.objects.filter(service_name="unannounced").update(is_active=True)
        reload.revision_bump()
        deadline = time.monotonic() + 3
        while "/api/v1/unannounced" not in snapshot.current().routes_by_prefix:
            assert time.monotonic() < deadline, "the poll did not pick the change up"
            time.sleep(0.02)
        time.sleep(0.5)
        assert len(attempts) >= 2  # the channel was tried again after CHANNEL_RETRY_S
    finally:
        running.stop()
        running.thread.join(timeout=5)
    assert not running.thread.is_alive()
