"""Roles (SPEC §7): each role on each admin REST endpoint and each admin page.

The three groups come from ``migrate``; a staff user lacking the permission an action
needs gets 403, in the REST API and in the admin UI alike; anonymous stays 401 and
non-staff 403. Allowed requests are checked to get past the permission check (they
may still answer 400/404 for the data they send).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.http.response import HttpResponseBase
from django.test import Client
from django.urls import reverse

from access.models import TokenIssuer
from access.services import api_key_create
from admin_panel.revisions import revision_record
from tests.support.admin_api import client_for, make_user
from tests.support.builders import make_app, make_service

pytestmark = [pytest.mark.django_db, pytest.mark.urls("admin_panel.urls")]

VIEWER, EDITOR, KEYS = "gateway-viewer", "gateway-editor", "gateway-key-manager"
ROLES = ("anonymous", "non-staff", "staff-no-role", VIEWER, EDITOR, KEYS, "superuser")
V, E, K = frozenset({VIEWER}), frozenset({EDITOR}), frozenset({KEYS})


@pytest.fixture
def world(db: None) -> dict[str, Any]:
    service = make_service("orders", "http://127.0.0.1:9", versions=[("v2", "http://127.0.0.1:9")])
    app = make_app("shop", entries=[{"path": "/api/v1/orders/*"}])
    key, _ = api_key_create(application=app, name="ci")
    issuer = TokenIssuer.objects.create(
        application=app, issuer="https://id.shop.example", jwks_url="https://id.shop.example/jwks.json"
    )
    revision = revision_record()
    assert revision is not None
    return {
        "issuer": issuer,
        "service": service,
        "version": service.versions.get(),
        "app": app,
        "entry": app.whitelist.get(),
        "key": key,
        "revision": revision.number,
    }


def user_for(role: str) -> User | None:
    if role == "anonymous":
        return None
    if role == "superuser":
        return User.objects.create_superuser("root", password="x-long-password-1")
    if role == "non-staff":
        return make_user("plain", is_staff=False)
    return make_user("ops", roles=() if role == "staff-no-role" else (role,))


def test_migrate_creates_the_three_groups_with_their_permissions() -> None:
    perms = {
        g.name: {f"{p.content_type.app_label}.{p.codename}" for p in g.permissions.all()} for g in Group.objects.all()
    }
    assert {VIEWER, EDITOR, KEYS} <= set(perms)
    assert "routing.view_serviceconfig" in perms[VIEWER]
    assert not any(p.split(".")[1].startswith(("add_", "change_", "delete_")) for p in perms[VIEWER])
    assert {"routing.add_serviceconfig", "access.delete_endpointwhitelist"} <= perms[EDITOR]
    assert "access.add_apikey" not in perms[EDITOR]
    assert perms[KEYS] == {"access.view_application", "access.view_apikey", "access.add_apikey", "access.change_apikey"}


# (method, path template, body, roles allowed besides the superuser)
ENDPOINTS: list[tuple[str, str, dict[str, object] | None, frozenset[str]]] = [
    ("GET", "/admin/routing/services", None, V | E),
    ("POST", "/admin/routing/services", {"service_name": "new", "default_url": "http://127.0.0.1:9"}, E),
    ("GET", "/admin/routing/services/orders", None, V | E),
    ("PATCH", "/admin/routing/services/orders", {"timeout_ms": 900}, E),
    ("PUT", "/admin/routing/services/orders", {"service_name": "orders", "default_url": "http://127.0.0.1:8"}, E),
    ("DELETE", "/admin/routing/services/orders", None, E),
    ("GET", "/admin/routing/services/orders/versions", None, V | E),
    ("POST", "/admin/routing/services/orders/versions", {"version": "v3", "url": "http://127.0.0.1:9"}, E),
    ("GET", "/admin/routing/services/orders/versions/v2", None, V | E),
    ("PATCH", "/admin/routing/services/orders/versions/v2", {"weight": 5}, E),
    ("PUT", "/admin/routing/services/orders/versions/v2", {"version": "v2", "url": "http://127.0.0.1:8"}, E),
    ("DELETE", "/admin/routing/services/orders/versions/v2", None, E),
    ("GET", "/admin/access/applications", None, V | E | K),
    ("POST", "/admin/access/applications", {"name": "other"}, E),
    ("GET", "/admin/access/applications/{app}", None, V | E | K),
    ("PATCH", "/admin/access/applications/{app}", {"description": "x"}, E),
    ("PUT", "/admin/access/applications/{app}", {"name": "shop", "description": "y"}, E),
    ("DELETE", "/admin/access/applications/{app}", None, E),
    ("GET", "/admin/access/applications/{app}/whitelist", None, V | E),
    ("POST", "/admin/access/applications/{app}/whitelist", {"endpoint_path": "/api/v1/x"}, E),
    ("GET", "/admin/access/applications/{app}/whitelist/{entry}", None, V | E),
    ("PATCH", "/admin/access/applications/{app}/whitelist/{entry}", {"rate_limit": 5}, E),
    ("PUT", "/admin/access/applications/{app}/whitelist/{entry}", {"endpoint_path": "/api/v1/orders/*"}, E),
    ("DELETE", "/admin/access/applications/{app}/whitelist/{entry}", None, E),
    ("GET", "/admin/access/applications/{app}/api-keys", None, V | E | K),
    ("POST", "/admin/access/applications/{app}/api-keys", {"name": "new"}, K),
    ("DELETE", "/admin/access/applications/{app}/api-keys/{key}", None, K),
    ("GET", "/admin/access/applications/{app}/token-issuers", None, V | E),
    ("POST", "/admin/access/applications/{app}/token-issuers", {"issuer": "https://id.example.com"}, E),
    ("GET", "/admin/access/applications/{app}/token-issuers/{issuer}", None, V | E),
    ("PATCH", "/admin/access/applications/{app}/token-issuers/{issuer}", {"audiences": ["shop"]}, E),
    (
        "PUT",
        "/admin/access/applications/{app}/token-issuers/{issuer}",
        {"issuer": "https://id.shop.example", "jwks_url": "https://id.shop.example/keys"},
        E,
    ),
    ("DELETE", "/admin/access/applications/{app}/token-issuers/{issuer}", None, E),
    ("GET", "/admin/cache", None, V | E),
    ("POST", "/admin/cache/refresh", None, E),
    ("GET", "/admin/queues", None, V | E),
    ("GET", "/admin/config/export", None, V | E),
    ("POST", "/admin/config/import?dry_run=1", {"services": [], "applications": []}, E),
    ("POST", "/admin/config/import", {"services": [], "applications": []}, E),
    ("GET", "/admin/config/revisions", None, V | E),
    ("GET", "/admin/config/revisions/{revision}", None, V | E),
    ("POST", "/admin/config/revisions/{revision}/rollback?dry_run=1", None, E),
    ("POST", "/admin/config/revisions/{revision}/rollback", None, E),
    ("GET", "/admin/schema", None, V | E | K | {"staff-no-role"}),
]


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:  # type: ignore[no-untyped-def]  # pytest-django fixture
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def rolled_back(send: Callable[[], HttpResponseBase]) -> HttpResponseBase:
    """Send one request in a savepoint rolled back after it: each request sees the same world."""
    with transaction.atomic():
        response = send()
        transaction.set_rollback(True)
    return response


@pytest.mark.parametrize("role", ROLES)
def test_each_role_on_each_endpoint(world: dict[str, Any], role: str) -> None:
    client = client_for(user_for(role))
    wrong = []
    for method, template, body, allowed in ENDPOINTS:
        ids = {"app": world["app"].pk, "entry": world["entry"].pk, "key": world["key"].pk, "issuer": world["issuer"].pk}
        path = template.format(**ids, revision=world["revision"])
        response = rolled_back(
            lambda: client.generic(method, path, data=_json(body), content_type="application/json")  # noqa: B023
        )
        if role == "anonymous":
            right = response.status_code == 401
        elif role == "non-staff" or (role != "superuser" and role not in allowed):
            right = response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
        else:
            right = response.status_code not in (401, 403) and response.status_code < 500
        if not right:
            wrong.append(f"{method} {template}: {response.status_code}")
    assert not wrong, wrong


def _json(body: dict | None) -> str:
    import json

    return "" if body is None else json.dumps(body)


# (url name, args from the world, roles allowed besides the superuser)
PAGES: list[tuple[str, str | None, frozenset[str]]] = [
    ("admin:routing_serviceconfig_changelist", None, V | E),
    ("admin:routing_serviceconfig_add", None, E),
    ("admin:routing_serviceconfig_change", "service", V | E),
    ("admin:routing_serviceversion_changelist", None, V | E),
    ("admin:routing_serviceversion_add", None, E),
    ("admin:access_application_changelist", None, V | E | K),
    ("admin:access_application_add", None, E),
    ("admin:access_application_change", "app", V | E | K),
    ("admin:access_endpointwhitelist_changelist", None, V | E),
    ("admin:access_endpointwhitelist_change", "entry", V | E),
    ("admin:access_apikey_changelist", None, V | E | K),
    ("admin:access_apikey_add", None, K),
    ("admin:access_apikey_change", "key", V | E | K),
    ("admin:access_apikey_revoke", "key", K),
    ("admin:queues_taskstatus_changelist", None, V | E),
    ("admin:queues_analyticsevent_changelist", None, V | E),
    ("admin:admin_panel_revision_changelist", None, V | E),
    ("admin:admin_panel_revision_change", "revision", V | E),
    ("admin:admin_panel_revision_rollback", "revision", E),
    ("admin_dashboard", None, V | E),
    ("admin_dashboard_data", None, V | E),
]


@pytest.mark.parametrize("role", ROLES[1:])
def test_each_role_on_each_page(world: dict[str, Any], role: str) -> None:
    client = Client()
    client.force_login(user_for(role))
    wrong = []
    for name, arg, allowed in PAGES:
        value = world[arg] if arg is not None else None
        url = reverse(name, args=[] if value is None else [value if isinstance(value, int) else value.pk])
        status = rolled_back(lambda: client.get(url)).status_code  # noqa: B023 - called at once
        if role == "non-staff":
            expected = 302  # to the login page
        elif role == "superuser" or role in allowed:
            expected = 200
        else:
            expected = 403
        if status != expected:
            wrong.append(f"{url}: {status}, expected {expected}")
    assert not wrong, wrong


def test_the_ui_hides_what_a_role_cannot_do(world: dict[str, Any]) -> None:
    """A viewer sees no add or save buttons, a key manager no service tables."""
    client = Client()
    client.force_login(make_user("viewer", roles=(VIEWER,)))
    page = client.get(reverse("admin:routing_serviceconfig_change", args=[world["service"].pk])).content.decode()
    assert 'name="_save"' not in page
    index = client.get(reverse("admin:index")).content.decode()
    assert "/admin/routing/serviceconfig/add/" not in index
    assert reverse("admin_dashboard") in index

    client.force_login(make_user("keys", roles=(KEYS,)))
    index = client.get(reverse("admin:index")).content.decode()
    assert "/admin/routing/serviceconfig/" not in index
    assert "/admin/access/apikey/add/" in index
    assert reverse("admin_dashboard") not in index
