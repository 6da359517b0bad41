"""Config history (SPEC §7 "Revisions"): every committed change a numbered revision; diff; rollback."""

from __future__ import annotations

import time

import pytest
import requests
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from access.services import api_key_create
from admin_panel import revisions
from admin_panel.models import Revision
from admin_panel.revisions import document_diff, revision_record
from routing.models import ServiceConfig
from tests.support.admin_api import client_for, make_user
from tests.support.builders import make_app, make_public_app, make_service
from tests.support.upstream import EchoUpstream

pytestmark = [pytest.mark.urls("admin_panel.urls")]


@pytest.fixture
def committed(django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]  # pytest-django fixture
    """Run on-commit callbacks (the reload, hence the revision) at the end of each ``with`` block."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.mark.django_db
def test_every_committed_api_change_is_a_numbered_revision_with_who_when_and_the_document(committed) -> None:
    ops = make_user("ops")
    api = client_for(ops)
    with committed():
        assert (
            api.post(
                "/admin/routing/services", {"service_name": "orders", "default_url": "http://a.test"}, format="json"
            ).status_code
            == 201
        )
    with committed():
        assert (
            api.patch("/admin/routing/services/orders", {"default_url": "http://b.test"}, format="json").status_code
            == 200
        )
    with committed():
        api.post("/admin/cache/refresh")  # a reload that changes nothing is no revision

    listed = api.get("/admin/config/revisions").json()
    assert [r["number"] for r in listed] == [2, 1]  # newest first
    assert listed[0]["user"] == "ops"
    assert listed[0]["created_at"]
    assert listed[0]["summary"] == "updated service orders (default_url)"
    assert listed[1]["summary"] == "created service orders"

    document = api.get("/admin/config/revisions/2").json()["document"]
    assert document == api.get("/admin/config/export").json() | {"applications": []}
    assert document["services"][0]["default_url"] == "http://b.test"
    assert api.get("/admin/config/revisions/1").json()["document"]["services"][0]["default_url"] == "http://a.test"
    assert api.get("/admin/config/revisions/99").status_code == 404


@pytest.mark.django_db
def test_revisions_hold_no_key_hash_and_no_usage_bookkeeping(committed) -> None:
    with committed():
        app = make_app("shop")
        key, plaintext = api_key_create(application=app, name="ci")
    document = Revision.objects.get().document
    text = str(document)
    assert key.key_prefix in text
    assert key.api_key_hash not in text and plaintext.split(".")[1] not in text
    assert "last_used_at" not in text


def test_document_diff_names_each_change_with_old_and_new_values() -> None:
    old = {
        "services": [
            {"service_name": "orders", "default_url": "http://a", "versions": [{"version": "v1", "weight": 1}]}
        ],
        "applications": [{"name": "gone", "whitelist": []}],
    }
    new = {
        "services": [
            {"service_name": "orders", "default_url": "http://b", "versions": [{"version": "v1", "weight": 5}]}
        ],
        "applications": [{"name": "shop", "whitelist": [{"endpoint_path": "/api/v1/x"}]}],
    }
    diff = document_diff(old, new)
    assert diff["created"] == [
        {"kind": "application", "key": {"name": "shop"}},
        {"kind": "whitelist_entry", "key": {"application": "shop", "endpoint_path": "/api/v1/x"}},
    ]
    assert diff["deleted"] == [{"kind": "application", "key": {"name": "gone"}}]
    assert diff["updated"] == [
        {
            "kind": "service",
            "key": {"service_name": "orders"},
            "fields": ["default_url"],
            "values": {"default_url": ["http://a", "http://b"]},
        },
        {
            "kind": "service_version",
            "key": {"service": "orders", "version": "v1"},
            "fields": ["weight"],
            "values": {"weight": [1, 5]},
        },
    ]


@pytest.mark.django_db(transaction=True)  # the rollback commits for real, as in production
def test_rollback_is_the_import_dry_run_first_then_recorded_as_a_new_revision(committed) -> None:
    api = client_for(make_user("ops"))
    with committed():
        make_service("orders", "http://a.test")
    with committed():
        api.patch("/admin/routing/services/orders", {"default_url": "http://b.test"}, format="json")
        api.post("/admin/routing/services", {"service_name": "billing", "default_url": "http://c.test"}, format="json")

    preview = api.post("/admin/config/revisions/1/rollback?dry_run=1").json()
    assert preview["dry_run"] is True
    assert preview["deleted"] == [{"kind": "service", "key": {"service_name": "billing"}}]
    assert preview["updated"] == [{"kind": "service", "key": {"service_name": "orders"}, "fields": ["default_url"]}]
    assert ServiceConfig.objects.count() == 2  # nothing changed

    with committed():
        done = api.post("/admin/config/revisions/1/rollback")
    assert done.status_code == 200, done.content
    assert list(ServiceConfig.objects.values_list("service_name", "default_url")) == [("orders", "http://a.test")]
    newest = api.get("/admin/config/revisions").json()[0]
    assert newest["number"] == 4  # 1: orders, 2: its new URL, 3: billing
    assert newest["rollback_of"] == 1
    assert newest["user"] == "ops"
    assert newest["summary"].startswith("Rollback to revision 1: ")
    assert (
        api.get("/admin/config/revisions/4").json()["document"]
        == api.get("/admin/config/revisions/1").json()["document"]
    )

    with committed():  # rolling back to what is in force already still records the rollback
        api.post("/admin/config/revisions/4/rollback")
    assert api.get("/admin/config/revisions").json()[0]["summary"] == "Rollback to revision 4: no change"


@pytest.mark.django_db
def test_a_rollback_that_cannot_apply_changes_nothing(committed) -> None:
    api = client_for(make_user("ops"))
    with committed():
        make_service("orders", "http://a.test")
    with committed():
        app = make_app("shop")
        api_key_create(application=app, name="ci")  # revision 1 lacks "shop", which has a key now

    response = api.post("/admin/config/revisions/1/rollback")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config"
    assert "has API keys" in error["problems"][0]["message"]
    assert app.__class__.objects.filter(name="shop").exists()
    assert Revision.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_admin_pages_show_a_readable_diff_and_roll_back_after_asking(committed) -> None:
    with committed():
        make_service("orders", "http://a.test")
    with committed():
        ServiceConfig.objects.filter(service_name="orders").update(default_url="http://b.test")
        make_service("billing", "http://c.test")
    browser = Client()
    editor = make_user("editor", roles=("gateway-editor",))
    browser.force_login(editor)

    listing = browser.get(reverse("admin:admin_panel_revision_changelist")).content.decode()
    assert "created service billing" in listing

    page = browser.get(reverse("admin:admin_panel_revision_change", args=[2])).content.decode()
    assert "Changes from revision 1 to revision 2" in page
    assert "http://a.test" in page and "http://b.test" in page  # before and after, not only the field name
    assert "Roll back to this revision" in page
    other = browser.get(reverse("admin:admin_panel_revision_change", args=[1]) + "?compare=2").content.decode()
    assert "Changes from revision 2 to revision 1" in other

    confirm_url = reverse("admin:admin_panel_revision_rollback", args=[1])
    asked = browser.get(confirm_url).content.decode()
    assert "billing" in asked and "Yes, roll back to revision 1" in asked
    assert ServiceConfig.objects.count() == 2
    with committed():
        assert browser.post(confirm_url).status_code == 302
    assert ServiceConfig.objects.get().default_url == "http://a.test"
    assert Revision.objects.order_by("-number").first().username == "editor"

    viewer = make_user("viewer", roles=("gateway-viewer",))
    browser.force_login(viewer)
    assert (
        "Roll back to this revision"
        not in browser.get(reverse("admin:admin_panel_revision_change", args=[2])).content.decode()
    )
    assert browser.post(confirm_url).status_code == 403


@pytest.mark.django_db
def test_revisions_are_kept_90_days_or_the_last_1000_whichever_keeps_more(monkeypatch, committed) -> None:
    monkeypatch.setattr(revisions, "KEEP_COUNT", 3)
    for n in range(6):
        with committed():
            make_service(f"s{n}", "http://a.test")
    assert Revision.objects.count() == 6  # all younger than 90 days
    Revision.objects.filter(number__lte=2).update(created_at="2020-01-01T00:00:00Z")
    with committed():
        make_service("s6", "http://a.test")
    assert sorted(Revision.objects.values_list("number", flat=True)) == [3, 4, 5, 6, 7]


@pytest.mark.django_db
def test_a_shell_change_names_no_user() -> None:
    make_service("orders", "http://a.test")
    revision = revision_record()
    assert revision is not None and revision.username == "" and revision.user is None


def test_rollback_reaches_every_gateway_worker_within_one_second(gateway_server, echo_upstream: EchoUpstream) -> None:
    """A real gateway serves the rolled-back upstream within 1 s of the rollback's answer."""
    other = EchoUpstream()
    try:
        make_public_app("/api/v1/orders/*")
        make_service("orders", echo_upstream.url)  # committed: recorded as a revision at once
        first = Revision.objects.order_by("-number").first().number
        ServiceConfig.objects.filter(service_name="orders").update(default_url=other.url)
        gateway = gateway_server(workers=2)
        _wait_until_served_by(gateway.url, other, deadline_s=10)

        response = client_for(User.objects.create_superuser("root", password="x-long-password-1")).post(
            f"/admin/config/revisions/{first}/rollback"
        )
        assert response.status_code == 200, response.content
        elapsed = _wait_until_served_by(gateway.url, echo_upstream, deadline_s=5)
        print(f"rollback served by the gateway's workers {elapsed:.3f} s after its answer")
        assert elapsed < 1.0
    finally:
        other.close()


def _wait_until_served_by(base_url: str, upstream: EchoUpstream, *, deadline_s: float) -> float:
    """Call the gateway until ``upstream`` answers several times in a row; return the seconds it took."""
    start = time.monotonic()
    in_a_row = 0
    while time.monotonic() - start < deadline_s:
        before = len(upstream.received)
        requests.get(f"{base_url}/api/v1/orders/x", timeout=2)
        in_a_row = in_a_row + 1 if len(upstream.received) > before else 0
        if in_a_row >= 4:  # both workers, most likely
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"not served by {upstream.url} within {deadline_s} s")
