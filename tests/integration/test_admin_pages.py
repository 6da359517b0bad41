"""The Django admin panel (port 4201): pages, forms, actions, key creation, styling."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from access.keys import hash_verify, key_split
from access.models import ApiKey, Application, EndpointWhitelist
from access.services import api_key_create
from routing.models import ServiceConfig, ServiceVersion

pytestmark = [pytest.mark.urls("admin_panel.urls")]

KEY_RE = re.compile(r"gk_[0-9a-f]{12}\.[A-Za-z0-9_-]{43,}")


@pytest.fixture
def config(db: None) -> dict[str, Any]:
    """One object of each of the five models."""
    service = ServiceConfig.objects.create(service_name="pipeline", default_url="http://127.0.0.1:7202")
    version = ServiceVersion.objects.create(service=service, version="v2", url="http://127.0.0.1:7203", weight=10)
    app = Application.objects.create(name="demo", allowed_origins=["https://app.example.com"])
    entry = EndpointWhitelist.objects.create(application=app, endpoint_path="/api/v1/pipelines/*", rate_limit=60)
    key, _ = api_key_create(application=app, name="ci")
    return {"service": service, "version": version, "app": app, "entry": entry, "key": key}


def admin_urls(config: dict[str, Any]) -> list[str]:
    """The changelist, add and change page of each of the five models."""
    urls = []
    for name, obj in (
        ("routing_serviceconfig", config["service"]),
        ("routing_serviceversion", config["version"]),
        ("access_application", config["app"]),
        ("access_endpointwhitelist", config["entry"]),
        ("access_apikey", config["key"]),
    ):
        urls += [
            reverse(f"admin:{name}_changelist"),
            reverse(f"admin:{name}_add"),
            reverse(f"admin:{name}_change", args=[obj.pk]),
        ]
    return urls


def test_every_admin_page_renders_for_a_superuser(admin_client: Client, config: dict[str, Any]) -> None:
    urls = admin_urls(config)
    assert len(urls) == 15
    for url in [reverse("admin:index"), *urls]:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert "API gateway admin" in response.content.decode(), url


def test_every_admin_page_redirects_anonymous_users_to_login(client: Client, config: dict[str, Any]) -> None:
    for url in admin_urls(config):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url


def test_staff_without_permissions_is_refused(client: Client, config: dict[str, Any]) -> None:
    get_user_model().objects.create_user("viewer", password="pw-not-used-elsewhere", is_staff=True)
    client.login(username="viewer", password="pw-not-used-elsewhere")
    response = client.get(reverse("admin:access_apikey_changelist"))
    assert response.status_code == 403


def test_root_redirects_to_admin(client: Client, db: None) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_api_key_add_form_shows_the_key_once_and_stores_a_verifiable_argon2id_hash(
    admin_client: Client, config: dict[str, Any]
) -> None:
    app = config["app"]
    add_url = reverse("admin:access_apikey_add")
    assert admin_client.get(add_url + f"?application={app.pk}").status_code == 200
    response = admin_client.post(
        add_url, {"application": app.pk, "name": "mobile", "expires_at_0": "", "expires_at_1": ""}
    )
    # POST/redirect/GET: the plaintext is on the page the redirect leads to, not in the POST's answer.
    assert response.status_code == 303
    assert not KEY_RE.findall(response.content.decode())
    assert not KEY_RE.search(str(dict(admin_client.session)))  # only a share, never the key
    shown_page = admin_client.get(response["Location"])
    assert shown_page.status_code == 200
    assert "no-store" in shown_page["Cache-Control"]
    page = shown_page.content.decode()
    shown = set(KEY_RE.findall(page))
    assert len(shown) == 1
    plaintext = shown.pop()

    # A reload shows it no more, and creates no second key.
    reload = admin_client.get(response["Location"])
    assert reload.status_code == 410
    assert not KEY_RE.findall(reload.content.decode())
    assert "was shown once" in reload.content.decode()
    assert ApiKey.objects.filter(application=app, name="mobile").count() == 1

    key = ApiKey.objects.get(name="mobile")
    prefix, secret = key_split(plaintext)
    assert key.key_prefix == prefix
    assert key.api_key_hash.startswith("$argon2id$")
    assert hash_verify(key.api_key_hash, secret)
    assert secret not in key.api_key_hash
    assert LogEntry.objects.filter(object_id=str(key.pk), action_flag=1).exists()

    # Never again: not on the key's page, the list, the application, nor in the session.
    for url in (
        reverse("admin:access_apikey_change", args=[key.pk]),
        reverse("admin:access_apikey_changelist"),
        reverse("admin:access_application_change", args=[app.pk]),
    ):
        later = admin_client.get(url).content.decode()
        assert secret not in later, url
        assert key.api_key_hash not in later, url
        assert key.key_prefix in later, url
    assert secret not in str(dict(admin_client.session))
    assert secret not in str(admin_client.cookies)


def test_api_key_change_form_cannot_edit_prefix_or_hash(admin_client: Client, config: dict[str, Any]) -> None:
    key: ApiKey = config["key"]
    before = (key.key_prefix, key.api_key_hash)
    url = reverse("admin:access_apikey_change", args=[key.pk])
    response = admin_client.post(
        url,
        {
            "name": "renamed",
            "expires_at_0": "",
            "expires_at_1": "",
            "is_active": "on",
            "key_prefix": "gk_000000000000",
            "api_key_hash": "$argon2id$forged",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    key.refresh_from_db()
    assert key.name == "renamed"
    assert (key.key_prefix, key.api_key_hash) == before


def test_revoke_action_asks_first_then_revokes_and_records_who_and_when(
    admin_client: Client, config: dict[str, Any]
) -> None:
    key: ApiKey = config["key"]
    changelist = reverse("admin:access_apikey_changelist")
    selection = {"action": "revoke_keys", "_selected_action": [str(key.pk)]}
    asked = admin_client.post(changelist, selection)
    assert asked.status_code == 200
    assert "can never be made active" in asked.content.decode()
    key.refresh_from_db()
    assert key.is_active is True  # nothing happens before the confirmation

    response = admin_client.post(changelist, {**selection, "confirm": "yes"})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.is_active is False
    entry = LogEntry.objects.get(object_id=str(key.pk), action_flag=CHANGE)
    assert "Is active" in entry.change_message
    page = admin_client.get(reverse("admin:access_apikey_change", args=[key.pk])).content.decode()
    assert "revoked at " in page and " by admin" in page


@pytest.mark.parametrize(
    ("changelist", "obj_name"),
    [
        ("admin:routing_serviceconfig_changelist", "service"),
        ("admin:routing_serviceversion_changelist", "version"),
        ("admin:access_application_changelist", "app"),
    ],
)
def test_deactivate_and_activate_actions(
    admin_client: Client, config: dict[str, Any], changelist: str, obj_name: str
) -> None:
    obj = config[obj_name]
    url = reverse(changelist)
    admin_client.post(url, {"action": "deactivate", "_selected_action": [str(obj.pk)]})
    obj.refresh_from_db()
    assert obj.is_active is False
    admin_client.post(url, {"action": "activate", "_selected_action": [str(obj.pk)]})
    obj.refresh_from_db()
    assert obj.is_active is True
    assert LogEntry.objects.filter(object_id=str(obj.pk), action_flag=CHANGE).count() == 2


def service_form(**overrides: str) -> dict[str, str]:
    data = {
        "service_name": "billing",
        "is_active": "on",
        "default_url": "http://127.0.0.1:9000",
        "current_version": "",
        "fallback_url": "",
        "route_prefix": "",
        "upstream_prefix": "",
        "timeout_ms": "",
        "versions-TOTAL_FORMS": "1",
        "versions-INITIAL_FORMS": "0",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
        "versions-0-version": "v1",
        "versions-0-url": "http://127.0.0.1:9001",
        "versions-0-weight": "100",
        "versions-0-is_active": "on",
    }
    data.update(overrides)
    return data


def test_service_add_form_saves_service_and_inline_version_with_history(admin_client: Client, db: None) -> None:
    response = admin_client.post(reverse("admin:routing_serviceconfig_add"), service_form())
    assert response.status_code == 302, response.content.decode()[:3000]
    service = ServiceConfig.objects.get(service_name="billing")
    assert service.route_prefix == "/api/v1/billing"
    assert service.upstream_prefix is None
    assert list(service.versions.values_list("version", "weight")) == [("v1", 100)]
    entry = LogEntry.objects.get(object_id=str(service.pk))
    assert entry.user.is_superuser


def test_service_form_strip_prefix_stores_an_empty_upstream_prefix(admin_client: Client, db: None) -> None:
    data = service_form(strip_route_prefix="on", **{"versions-TOTAL_FORMS": "0"})
    response = admin_client.post(reverse("admin:routing_serviceconfig_add"), data)
    assert response.status_code == 302
    assert ServiceConfig.objects.get(service_name="billing").upstream_prefix == ""


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("default_url", "ftp://example.com", "Use an http:// or https:// URL"),
        ("default_url", "queue://fax", "Unknown queue"),
        ("service_name", "Billing", "lower-case letters"),
        ("route_prefix", "/api/v1/../x", "no empty, &#x27;.&#x27; or &#x27;..&#x27; segments"),
        ("versions-0-weight", "1001", "less than or equal to 1000"),
    ],
)
def test_service_form_shows_model_validation_errors(
    admin_client: Client, db: None, field: str, value: str, message: str
) -> None:
    response = admin_client.post(reverse("admin:routing_serviceconfig_add"), service_form(**{field: value}))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ServiceConfig.objects.exists()


def application_form(**overrides: str) -> dict[str, str]:
    data = {
        "name": "web",
        "description": "",
        "is_active": "on",
        "allowed_services": "pipeline\nauth",
        "allowed_versions": "",
        "allowed_origins": "https://app.example.com, http://localhost:3000",
        "whitelist-TOTAL_FORMS": "1",
        "whitelist-INITIAL_FORMS": "0",
        "whitelist-MIN_NUM_FORMS": "0",
        "whitelist-MAX_NUM_FORMS": "1000",
        "whitelist-0-endpoint_path": "/api/v1/pipelines/{id}",
        "whitelist-0-allowed_methods": ["GET", "POST"],
        "whitelist-0-allowed_versions": "v1\nv2",
        "whitelist-0-rate_limit": "60",
        "whitelist-0-rate_limit_by": "application",
        "token_issuers-TOTAL_FORMS": "0",
        "token_issuers-INITIAL_FORMS": "0",
        "token_issuers-MIN_NUM_FORMS": "0",
        "token_issuers-MAX_NUM_FORMS": "1000",
        "api_keys-TOTAL_FORMS": "0",
        "api_keys-INITIAL_FORMS": "0",
        "api_keys-MIN_NUM_FORMS": "0",
        "api_keys-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def test_application_form_maps_text_lists_to_json_lists(admin_client: Client, db: None) -> None:
    response = admin_client.post(reverse("admin:access_application_add"), application_form())
    assert response.status_code == 302, response.content.decode()[:3000]
    app = Application.objects.get(name="web")
    assert app.allowed_services == ["pipeline", "auth"]
    assert app.allowed_versions == []
    assert app.allowed_origins == ["https://app.example.com", "http://localhost:3000"]
    entry = app.whitelist.get()
    assert entry.allowed_methods == ["GET", "POST"]
    assert entry.allowed_versions == ["v1", "v2"]
    assert entry.rate_limit == 60
    # The change page shows the lists back one per line.
    page = admin_client.get(reverse("admin:access_application_change", args=[app.pk])).content.decode()
    assert "pipeline\nauth</textarea>" in page


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("allowed_origins", "https://app.example.com/path", "is not an origin"),
        ("allowed_services", "Pipeline", "lower-case letters"),
        ("allowed_versions", "v1 v1", "Items must be unique"),
        ("whitelist-0-endpoint_path", "/api/v1/pipe*", "only allowed as a final"),
        ("whitelist-0-rate_limit", "0", "greater than or equal to 1"),
    ],
)
def test_application_form_shows_model_validation_errors_on_the_field(
    admin_client: Client, db: None, field: str, value: str, message: str
) -> None:
    response = admin_client.post(reverse("admin:access_application_add"), application_form(**{field: value}))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Application.objects.exists()


def test_key_status_filter(admin_client: Client, config: dict[str, Any]) -> None:
    app = config["app"]
    old, _ = api_key_create(application=app, name="old", expires_at=timezone.now() - timedelta(days=1))
    url = reverse("admin:access_apikey_changelist")
    expired = admin_client.get(url + "?status=expired").content.decode()
    active = admin_client.get(url + "?status=active").content.decode()
    assert old.key_prefix in expired
    assert config["key"].key_prefix not in expired
    assert old.key_prefix not in active


def test_admin_panel_serves_styled_admin_with_debug_off(gateway_server) -> None:
    """A real gunicorn on admin_panel.wsgi with DEBUG=false serves the admin CSS (whitenoise)."""
    panel = gateway_server(app="admin_panel.wsgi:application", env={"DEBUG": "false"}, ready_path="/admin/login/")
    login = requests.get(panel.url + "/admin/login/", timeout=5)
    assert login.status_code == 200
    stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+\.css)"', login.text)
    assert stylesheets, login.text[:500]
    for href in stylesheets:
        css = requests.get(panel.url + href, timeout=5)
        assert css.status_code == 200, href
        assert css.headers["Content-Type"].startswith("text/css")
        assert len(css.content) > 100


def test_task_and_event_pages_are_read_only(admin_client: Client, db: None) -> None:
    from queues.models import AnalyticsEvent, TaskStatus

    task = TaskStatus.objects.create(queue="email", request_id="req-1", idempotency_key="d" * 64)
    AnalyticsEvent.objects.create(task_id=task.id, name="signup", occurred_at=timezone.now())
    changelist = reverse("admin:queues_taskstatus_changelist")
    assert str(task.id) in admin_client.get(changelist).content.decode()
    assert str(task.id) in admin_client.get(changelist + f"?q={task.id}").content.decode()
    assert admin_client.get(changelist + "?q=not-a-uuid").status_code == 200
    detail = admin_client.get(reverse("admin:queues_taskstatus_change", args=[task.pk]))
    assert detail.status_code == 200
    assert "d" * 64 not in detail.content.decode()
    assert admin_client.get(reverse("admin:queues_taskstatus_add")).status_code == 403
    assert "signup" in admin_client.get(reverse("admin:queues_analyticsevent_changelist")).content.decode()


def test_a_revoked_key_cannot_be_reactivated_in_the_admin(admin_client: Client, config: dict[str, Any]) -> None:
    key: ApiKey = config["key"]
    url = reverse("admin:access_apikey_change", args=[key.pk])
    form = {"name": "ci", "expires_at_0": "", "expires_at_1": ""}
    assert admin_client.post(url, form).status_code == 302  # no is_active box: a save never revokes
    key.refresh_from_db()
    assert key.is_active is True

    revoke = reverse("admin:access_apikey_revoke", args=[key.pk])
    assert "can never be made active" in admin_client.get(revoke).content.decode()
    key.refresh_from_db()
    assert key.is_active is True
    assert admin_client.post(revoke).status_code == 302
    key.refresh_from_db()
    assert key.is_active is False

    later = timezone.now() + timedelta(days=30)
    forged = {**form, "is_active": "on", "expires_at_0": later.date().isoformat(), "expires_at_1": "10:00:00"}
    assert admin_client.post(url, forged).status_code == 302
    key.refresh_from_db()
    assert key.is_active is False
    assert key.expires_at is None  # the expiry is read-only once revoked
    page = admin_client.get(url).content.decode()
    assert 'name="expires_at_0"' not in page
    assert "revoked at " in page


@pytest.mark.django_db
def test_the_demo_seeds_versions_to_try() -> None:
    from django.core.management import call_command

    call_command("gateway_seed_demo", "--no-superuser", stdout=open("/dev/null", "w"))  # noqa: SIM115 - closed at exit
    pipeline = ServiceConfig.objects.get(service_name="pipeline")
    assert sorted(pipeline.versions.values_list("version", "weight")) == [("v1", 90), ("v2", 10)]
    assert pipeline.current_version == "v1"


def test_key_page_is_shown_once_across_the_workers_of_a_real_admin_panel(gateway_server) -> None:
    """POST/redirect/GET on a 2-worker gunicorn: the one-time page works whichever worker answers."""
    app = Application.objects.create(name="shop")
    admin = get_user_model().objects.create_superuser("root", password="x-long-password-1")
    login = Client()
    login.force_login(admin)
    panel = gateway_server(app="admin_panel.wsgi:application", workers=2, ready_path="/admin/login/")
    browser = requests.Session()
    browser.cookies.set("sessionid", login.cookies["sessionid"].value)
    add_url = panel.url + reverse("admin:access_apikey_add")
    form = browser.get(add_url + f"?application={app.pk}", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    posted = browser.post(
        add_url,
        data={"csrfmiddlewaretoken": csrf, "application": str(app.pk), "name": "mobile", "_save": "Save"},
        headers={"Referer": add_url},
        allow_redirects=False,
        timeout=10,
    )
    assert posted.status_code == 303, posted.text[:2000]
    assert not KEY_RE.search(posted.text) and not KEY_RE.search(str(posted.headers))
    shown = browser.get(panel.url + posted.headers["Location"], timeout=10)
    assert shown.status_code == 200 and len(set(KEY_RE.findall(shown.text))) == 1
    for _ in range(4):  # reloads, answered by either worker
        again = browser.get(panel.url + posted.headers["Location"], timeout=10)
        assert again.status_code == 410 and not KEY_RE.search(again.text)
    assert ApiKey.objects.filter(application=app).count() == 1
    assert KEY_RE.findall(shown.text)[0] not in panel.log()
