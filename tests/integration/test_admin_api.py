"""Admin REST API (SPEC §7): CRUD and error paths of every endpoint, keys shown once, audit trail."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.test import Client
from django.utils import timezone

from access.keys import hash_verify
from access.models import ApiKey, Application, EndpointWhitelist
from routing.models import ServiceConfig, ServiceVersion
from tests.support.admin_api import client_for, make_user, use_fast_password_hashing
from tests.support.builders import make_app, make_entry, make_key, make_service

pytestmark = pytest.mark.django_db

SERVICES = "/admin/routing/services"
APPS = "/admin/access/applications"


@pytest.fixture(autouse=True)
def _fast_hashing(request, settings) -> None:
    use_fast_password_hashing(request, settings)


@pytest.fixture
def staff():
    return make_user("ops")


@pytest.fixture
def api(staff):
    return client_for(staff)


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "request_id"} <= set(body["error"])
    return body["error"]


# --- Services ------------------------------------------------------------------------------


def test_service_create_then_read_list_and_defaults(api) -> None:
    created = api.post(SERVICES, {"service_name": "billing", "default_url": "http://127.0.0.1:9001"}, format="json")
    assert created.status_code == 201, created.content
    assert created["Location"] == "http://testserver/admin/routing/services/billing"
    body = created.json()
    assert body["route_prefix"] == "/api/v1/billing"
    assert body["upstream_prefix"] is None
    assert body["is_active"] is True
    assert uuid.UUID(body["id"])
    assert api.get(f"{SERVICES}/billing").json() == body
    assert [s["service_name"] for s in api.get(SERVICES).json()] == ["billing"]
    assert ServiceConfig.objects.get(service_name="billing").default_url == "http://127.0.0.1:9001"


def test_service_invalid_fields_get_400_with_the_model_messages(api) -> None:
    response = api.post(
        SERVICES,
        {"service_name": "Not Valid", "default_url": "ftp://x", "route_prefix": "/elsewhere", "timeout_ms": 0},
        format="json",
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid"
    assert set(error["fields"]) == {"service_name", "default_url", "route_prefix", "timeout_ms"}
    assert "lower-case letters" in error["fields"]["service_name"][0]
    assert not ServiceConfig.objects.exists()


def test_service_queue_url_is_validated_like_the_admin(api) -> None:
    bad = api.post(SERVICES, {"service_name": "mail", "default_url": "queue://nope"}, format="json")
    assert bad.status_code == 400
    assert "Unknown queue" in error_of(bad)["fields"]["default_url"][0]
    good = api.post(SERVICES, {"service_name": "mail", "default_url": "queue://email"}, format="json")
    assert good.status_code == 201


def test_duplicate_service_name_and_prefix_get_400(api) -> None:
    make_service("billing", "http://127.0.0.1:9001")
    dup = api.post(SERVICES, {"service_name": "billing", "default_url": "http://127.0.0.1:9002"}, format="json")
    assert dup.status_code == 400
    assert "service_name" in error_of(dup)["fields"]
    clash = api.post(
        SERVICES,
        {"service_name": "other", "default_url": "http://127.0.0.1:9002", "route_prefix": "/api/v1/billing"},
        format="json",
    )
    assert clash.status_code == 400
    assert "route_prefix" in error_of(clash)["fields"]
    assert ServiceConfig.objects.count() == 1


@pytest.mark.parametrize(
    "body",
    [[], "text", 7, {"service_name": ["x"], "default_url": {}}, {"service_name": "a\x00b", "default_url": "http://h"}],
)
def test_malformed_bodies_get_400_not_500(api, body) -> None:
    response = api.post(SERVICES, body, format="json")
    assert response.status_code == 400
    error_of(response)


def test_body_that_is_not_json_gets_400(api) -> None:
    response = api.post(SERVICES, data=b"{nope", content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "parse_error"


def test_service_patch_put_and_delete(api) -> None:
    make_service("billing", "http://127.0.0.1:9001", versions=[("v1", "http://127.0.0.1:9101")])
    patched = api.patch(
        f"{SERVICES}/billing", {"fallback_url": "http://127.0.0.1:9009", "timeout_ms": 1500}, format="json"
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["fallback_url"] == "http://127.0.0.1:9009"
    assert patched.json()["default_url"] == "http://127.0.0.1:9001"
    put = api.put(
        f"{SERVICES}/billing",
        {"service_name": "billing", "default_url": "https://billing.internal", "current_version": ""},
        format="json",
    )
    assert put.status_code == 200
    row = ServiceConfig.objects.get(service_name="billing")
    assert row.default_url == "https://billing.internal"
    assert row.current_version is None  # "" means unset
    bad = api.patch(f"{SERVICES}/billing", {"default_url": "nope"}, format="json")
    assert bad.status_code == 400
    assert ServiceConfig.objects.get(service_name="billing").default_url == "https://billing.internal"
    assert api.delete(f"{SERVICES}/billing").status_code == 204
    assert not ServiceConfig.objects.exists()
    assert not ServiceVersion.objects.exists()


def test_unknown_service_gets_json_404_on_every_method(api) -> None:
    for method in ("get", "put", "patch", "delete"):
        response = getattr(api, method)(f"{SERVICES}/ghost", {}, format="json")
        assert response.status_code == 404, method
        assert error_of(response)["code"] == "not_found"
    assert api.get(f"{SERVICES}/ghost/versions").status_code == 404


def test_unsupported_method_gets_405_json(api) -> None:
    response = api.delete(SERVICES)
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


# --- Versions ------------------------------------------------------------------------------


def test_version_crud(api) -> None:
    make_service("billing", "http://127.0.0.1:9001")
    url = f"{SERVICES}/billing/versions"
    created = api.post(url, {"version": "v2", "url": "http://127.0.0.1:9102", "weight": 30}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["service"] == "billing"
    assert [v["version"] for v in api.get(url).json()] == ["v2"]
    assert api.get(f"{url}/v2").json()["weight"] == 30
    assert api.patch(f"{url}/v2", {"weight": 0, "is_active": False}, format="json").status_code == 200
    row = ServiceVersion.objects.get(version="v2")
    assert (row.weight, row.is_active) == (0, False)
    assert api.put(f"{url}/v2", {"version": "v2", "url": "http://127.0.0.1:9200"}, format="json").status_code == 200
    assert ServiceVersion.objects.get(version="v2").url == "http://127.0.0.1:9200"
    assert api.delete(f"{url}/v2").status_code == 204
    assert api.get(f"{url}/v2").status_code == 404


def test_version_errors(api) -> None:
    make_service("billing", "http://127.0.0.1:9001", versions=[("v1", "http://127.0.0.1:9101")])
    url = f"{SERVICES}/billing/versions"
    out_of_range = api.post(url, {"version": "v2", "url": "http://h", "weight": 1001}, format="json")
    assert out_of_range.status_code == 400
    assert "weight" in error_of(out_of_range)["fields"]
    reserved = api.post(url, {"version": "default", "url": "http://h"}, format="json")
    assert reserved.status_code == 400
    assert "version" in error_of(reserved)["fields"]
    duplicate = api.post(url, {"version": "v1", "url": "http://h"}, format="json")
    assert duplicate.status_code == 400
    assert ServiceVersion.objects.count() == 1
    assert (
        api.post(f"{SERVICES}/ghost/versions", {"version": "v1", "url": "http://h"}, format="json").status_code == 404
    )


# --- Applications and whitelist --------------------------------------------------------------


def test_application_crud(api) -> None:
    created = api.post(
        APPS,
        {"name": "web", "allowed_services": ["billing"], "allowed_origins": ["https://app.example.com"]},
        format="json",
    )
    assert created.status_code == 201, created.content
    app_id = created.json()["id"]
    assert created.json()["allowed_versions"] == []
    assert api.get(f"{APPS}/{app_id}").json()["name"] == "web"
    assert [a["name"] for a in api.get(APPS).json()] == ["web"]
    assert api.patch(f"{APPS}/{app_id}", {"is_active": False}, format="json").json()["is_active"] is False
    assert api.put(f"{APPS}/{app_id}", {"name": "web2", "description": "d"}, format="json").status_code == 200
    assert Application.objects.get().name == "web2"
    assert api.delete(f"{APPS}/{app_id}").status_code == 204
    assert not Application.objects.exists()


def test_application_errors(api) -> None:
    make_app("web")
    duplicate = api.post(APPS, {"name": "web"}, format="json")
    assert duplicate.status_code == 400
    assert "name" in error_of(duplicate)["fields"]
    bad_lists = api.post(
        APPS, {"name": "x", "allowed_origins": ["https://a.example/path"], "allowed_services": ["Bad"]}, format="json"
    )
    assert bad_lists.status_code == 400
    assert {"allowed_origins", "allowed_services"} <= set(error_of(bad_lists)["fields"])
    not_a_list = api.post(APPS, {"name": "y", "allowed_versions": "v1"}, format="json")
    assert not_a_list.status_code == 400
    for bad_id in ("not-a-uuid", str(uuid.uuid4())):
        assert api.get(f"{APPS}/{bad_id}").status_code == 404
        assert api.get(f"{APPS}/{bad_id}/whitelist").status_code == 404
        assert api.get(f"{APPS}/{bad_id}/api-keys").status_code == 404


def test_whitelist_crud_and_errors(api) -> None:
    app = make_app("web")
    url = f"{APPS}/{app.id}/whitelist"
    created = api.post(
        url, {"endpoint_path": "/api/v1/billing/{id}", "allowed_methods": ["GET"], "rate_limit": 60}, format="json"
    )
    assert created.status_code == 201, created.content
    entry_id = created.json()["id"]
    assert created["Location"].endswith(f"{url}/{entry_id}")
    assert created.json()["application"] == str(app.id)
    assert [e["endpoint_path"] for e in api.get(url).json()] == ["/api/v1/billing/{id}"]
    assert api.patch(f"{url}/{entry_id}", {"is_public": True}, format="json").json()["is_public"] is True
    assert api.put(f"{url}/{entry_id}", {"endpoint_path": "/api/v1/billing/*"}, format="json").status_code == 200
    assert EndpointWhitelist.objects.get().endpoint_path == "/api/v1/billing/*"

    bad = api.post(url, {"endpoint_path": "no-slash", "allowed_methods": ["get"], "rate_limit": 0}, format="json")
    assert bad.status_code == 400
    assert {"endpoint_path", "allowed_methods", "rate_limit"} <= set(error_of(bad)["fields"])
    dup = api.post(url, {"endpoint_path": "/api/v1/billing/*"}, format="json")
    assert dup.status_code == 400

    other = make_app("other")
    assert api.get(f"{APPS}/{other.id}/whitelist/{entry_id}").status_code == 404  # another application's entry
    assert api.get(f"{url}/not-a-uuid").status_code == 404
    assert api.delete(f"{url}/{entry_id}").status_code == 204
    assert not EndpointWhitelist.objects.exists()


# --- API keys ---------------------------------------------------------------------------------


def test_key_is_answered_once_and_never_listed(api) -> None:
    app = make_app("web")
    url = f"{APPS}/{app.id}/api-keys"
    created = api.post(url, {"name": "ci"}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    plaintext = body["key"]
    prefix, _, secret = plaintext.partition(".")
    assert prefix == body["key_prefix"]
    assert "api_key_hash" not in body
    assert created["Cache-Control"] == "no-store"
    stored = ApiKey.objects.get(pk=body["id"])
    assert hash_verify(stored.api_key_hash, secret)
    assert secret not in stored.api_key_hash

    listing = api.get(url)
    assert listing.status_code == 200
    text = listing.content.decode()
    assert secret not in text and stored.api_key_hash not in text and '"key"' not in text
    assert [k["key_prefix"] for k in listing.json()] == [prefix]
    export = api.get("/admin/config/export").content.decode()
    assert secret not in export and stored.api_key_hash not in export


def test_key_delete_revokes_and_keeps_the_row(api) -> None:
    app = make_app("web")
    key, _ = make_key(app)
    revoked = api.delete(f"{APPS}/{app.id}/api-keys/{key.id}")
    assert revoked.status_code == 200
    assert revoked.json()["is_active"] is False
    key.refresh_from_db()
    assert key.is_active is False
    assert [k["is_active"] for k in api.get(f"{APPS}/{app.id}/api-keys").json()] == [False]


def test_key_errors(api) -> None:
    app, other = make_app("web"), make_app("other")
    key, _ = make_key(app)
    url = f"{APPS}/{app.id}/api-keys"
    assert api.post(url, {}, format="json").status_code == 400
    past = (timezone.now() - timedelta(days=1)).isoformat()
    expired = api.post(url, {"name": "x", "expires_at": past}, format="json")
    assert expired.status_code == 400
    assert "expires_at" in error_of(expired)["fields"]
    assert api.post(url, {"name": "x", "expires_at": "tomorrow"}, format="json").status_code == 400
    assert api.delete(f"{APPS}/{other.id}/api-keys/{key.id}").status_code == 404  # not that application's key
    assert api.delete(f"{url}/{uuid.uuid4()}").status_code == 404
    assert api.get(f"{url}/{key.id}").status_code == 405  # keys are revoked, never shown one by one
    assert ApiKey.objects.get().is_active is True


# --- Cache and queues ---------------------------------------------------------------------------


def test_cache_describes_this_process_and_the_database_version(api) -> None:
    from gateway_core import snapshot
    from routing import reload

    reload.load_now()
    response = api.get("/admin/cache")
    assert response.status_code == 200
    body = response.json()
    assert body["loaded"] is True
    assert body["version"] == snapshot.installed().version
    assert body["config_version"] == reload.revision_read()
    assert isinstance(body["counts"], dict)
    assert body["loaded_at"]


def test_cache_refresh_bumps_the_config_version(api, django_capture_on_commit_callbacks) -> None:
    from routing import reload

    before = reload.revision_read()
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/admin/cache/refresh")
    assert response.status_code == 202
    assert reload.revision_read() == before + 1


def test_queues_lists_the_five_queues(api) -> None:
    response = api.get("/admin/queues")
    assert response.status_code == 200
    names = [q["queue"] for q in response.json()["queues"]]
    assert names == ["email", "sms", "ai", "analytics", "execution"]
    assert all("depth" in q and "consumers" in q for q in response.json()["queues"])


# --- Audit trail ------------------------------------------------------------------------------------


def test_api_changes_are_in_the_admin_history_with_user_and_fields(api, staff) -> None:
    api.post(SERVICES, {"service_name": "billing", "default_url": "http://127.0.0.1:9001"}, format="json")
    api.patch(f"{SERVICES}/billing", {"default_url": "http://127.0.0.1:9002", "timeout_ms": 900}, format="json")
    api.patch(f"{SERVICES}/billing", {"default_url": "http://127.0.0.1:9002"}, format="json")  # no change
    service_id = str(ServiceConfig.objects.get().id)
    api.delete(f"{SERVICES}/billing")

    entries = list(LogEntry.objects.filter(object_id=service_id).order_by("id"))
    assert [e.action_flag for e in entries] == [ADDITION, CHANGE, DELETION]
    assert all(e.user_id == staff.id for e in entries)
    assert entries[1].get_change_message() == (
        "Changed Default url: http://127.0.0.1:9001 → http://127.0.0.1:9002. Changed Timeout ms: (empty) → 900."
    )
    assert entries[0].content_type.model_class() is ServiceConfig


def test_key_issue_and_revoke_and_entry_changes_are_audited(api, staff) -> None:
    app = make_app("web")
    entry = make_entry(app, "/api/v1/x")
    key_id = api.post(f"{APPS}/{app.id}/api-keys", {"name": "ci"}, format="json").json()["id"]
    api.delete(f"{APPS}/{app.id}/api-keys/{key_id}")
    api.patch(f"{APPS}/{app.id}/whitelist/{entry.id}", {"rate_limit": 10}, format="json")
    flags = list(LogEntry.objects.filter(object_id=key_id).order_by("id").values_list("action_flag", flat=True))
    assert flags == [ADDITION, CHANGE]
    change = LogEntry.objects.get(object_id=str(entry.id))
    assert change.user_id == staff.id
    assert change.get_change_message() == "Changed Rate limit: (empty) → 10."


def test_api_changes_show_in_the_admin_history_page(api, settings) -> None:
    settings.ROOT_URLCONF = "admin_panel.urls"
    api.post(SERVICES, {"service_name": "billing", "default_url": "http://127.0.0.1:9001"}, format="json")
    api.patch(f"{SERVICES}/billing", {"timeout_ms": 900}, format="json")
    service = ServiceConfig.objects.get()
    viewer = make_user("auditor")
    viewer.is_superuser = True
    viewer.save()
    browser = Client()
    browser.force_login(viewer)
    page = browser.get(f"/admin/routing/serviceconfig/{service.pk}/history/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Changed Timeout ms: (empty) → 900." in text
    assert "Added." in text
    assert "ops" in text  # the API user who made the changes


def test_nul_in_a_path_parameter_is_a_404_not_a_500(api) -> None:
    make_service("billing", "http://127.0.0.1:9001")
    assert api.get(f"{SERVICES}/%00").status_code == 404
    assert api.get(f"{SERVICES}/billing/versions/v%001").status_code == 404
    assert api.get(f"{APPS}/%00").status_code == 404
