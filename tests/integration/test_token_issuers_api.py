"""Token issuers through the admin REST API, the config export/import and the admin history."""

from __future__ import annotations

import copy

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User

from access.models import TokenIssuer
from admin_panel.config_io import config_export, config_import
from tests.support.admin_api import client_for
from tests.support.builders import make_app

pytestmark = pytest.mark.django_db

JWKS = {"issuer": "https://id.example.com", "jwks_url": "https://id.example.com/jwks", "algorithms": ["RS256"]}


@pytest.fixture
def admin() -> User:
    return User.objects.create_superuser("root", password="x" * 20)


def issuers_url(app_id: object) -> str:
    return f"/admin/access/applications/{app_id}/token-issuers"


def test_create_list_change_delete_an_issuer_with_history(admin: User) -> None:
    app = make_app("web")
    api = client_for(admin)
    created = api.post(issuers_url(app.id), {**JWKS, "audiences": ["orders"]}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["issuer"] == JWKS["issuer"] and body["user_claim"] == "sub" and body["leeway_s"] == 30
    assert created["Location"].endswith(f"{issuers_url(app.id)}/{body['id']}")
    assert [i["issuer"] for i in api.get(issuers_url(app.id)).json()] == [JWKS["issuer"]]
    changed = api.patch(f"{issuers_url(app.id)}/{body['id']}", {"leeway_s": 5}, format="json")
    assert changed.status_code == 200 and changed.json()["leeway_s"] == 5
    assert api.delete(f"{issuers_url(app.id)}/{body['id']}").status_code == 204
    assert not TokenIssuer.objects.exists()
    flags = list(LogEntry.objects.filter(object_id=body["id"]).order_by("id").values_list("action_flag", flat=True))
    assert flags == [1, 2, 3]  # added, changed, deleted


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"issuer": "a", "algorithms": ["RS256"]}, "jwks_url"),
        ({**JWKS, "algorithms": ["none"]}, "algorithms"),
        ({**JWKS, "algorithms": ["HS256"]}, "algorithms"),
        ({**JWKS, "secret_env": "AUTH_SECRET"}, "jwks_url"),
        ({**JWKS, "jwks_url": "http://id.example.com/jwks"}, "jwks_url"),
        ({"issuer": "b", "secret_env": "s3cr3t-value", "algorithms": ["HS256"]}, "secret_env"),
        ({**JWKS, "audiences": "orders"}, "audiences"),
    ],
    ids=["no-source", "alg-none", "hs-on-jwks", "two-sources", "http-remote", "secret-not-a-name", "aud-not-list"],
)
def test_invalid_issuers_are_400_with_the_field(admin: User, payload: dict[str, object], field: str) -> None:
    app = make_app("web")
    answer = client_for(admin).post(issuers_url(app.id), payload, format="json")
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["error"]["fields"]
    assert not TokenIssuer.objects.exists()


def test_duplicate_issuer_is_refused(admin: User) -> None:
    web, other = make_app("web"), make_app("other")
    api = client_for(admin)
    assert api.post(issuers_url(web.id), JWKS, format="json").status_code == 201
    assert api.post(issuers_url(other.id), JWKS, format="json").status_code in (400, 409)


def test_issuer_endpoints_are_in_the_schema(admin: User) -> None:
    schema = client_for(admin).get("/admin/schema", {"format": "json"}).json()
    assert "/admin/access/applications/{id}/token-issuers" in schema["paths"]
    assert "/admin/access/applications/{id}/token-issuers/{issuer_id}" in schema["paths"]


def test_export_import_and_dry_run_diff_include_issuers(admin: User) -> None:
    web = make_app("web", entries=[{"path": "/api/v1/orders/*"}])
    TokenIssuer.objects.create(application=web, **JWKS)
    document = config_export()
    exported = document["applications"][0]  # type: ignore[index]  # a JSON document
    assert exported["token_issuers"][0]["issuer"] == JWKS["issuer"]
    assert exported["whitelist"][0]["rate_limit_by"] == "application"
    assert config_import(document, actor=admin, dry_run=True).is_empty

    changed = copy.deepcopy(document)
    app_doc = changed["applications"][0]  # type: ignore[index]
    app_doc["token_issuers"][0]["audiences"] = ["orders"]
    app_doc["token_issuers"].append({"issuer": "hs", "secret_env": "WEB_HS_SECRET", "algorithms": ["HS256"]})
    app_doc["whitelist"][0].update({"rate_limit": 5, "rate_limit_by": "user", "required_scopes": ["orders:read"]})
    diff = config_import(changed, actor=admin, dry_run=True).as_dict()
    assert {"kind": "token_issuer", "key": {"application": "web", "issuer": "hs"}} in diff["created"]
    assert {
        "kind": "token_issuer",
        "key": {"application": "web", "issuer": JWKS["issuer"]},
        "fields": ["audiences"],
    } in diff["updated"]
    assert TokenIssuer.objects.count() == 1  # a dry run changes nothing

    config_import(changed, actor=admin)
    assert sorted(TokenIssuer.objects.values_list("issuer", flat=True)) == ["hs", JWKS["issuer"]]
    assert config_import(changed, actor=admin, dry_run=True).is_empty

    app_doc["token_issuers"] = [app_doc["token_issuers"][1]]
    diff = config_import(changed, actor=admin).as_dict()
    assert diff["deleted"] == [{"kind": "token_issuer", "key": {"application": "web", "issuer": JWKS["issuer"]}}]


def test_import_refuses_an_invalid_issuer_and_a_duplicate_iss(admin: User) -> None:
    from admin_panel.config_io import ConfigInvalid

    make_app("web")
    make_app("other")
    document = config_export()
    apps = document["applications"]  # type: ignore[index]
    apps[0]["token_issuers"] = [{"issuer": "x", "jwks_url": "https://a/jwks", "algorithms": ["none"]}]
    apps[1]["token_issuers"] = [JWKS, {**JWKS}]
    with pytest.raises(ConfigInvalid) as caught:
        config_import(document, actor=admin)
    locations = {p.location for p in caught.value.problems}
    assert any(loc.startswith("applications[0].token_issuers[0].algorithms") for loc in locations)
    assert "applications[1].token_issuers[1].issuer" in locations
    assert not TokenIssuer.objects.exists()


@pytest.mark.urls("admin_panel.urls")
def test_application_page_adds_an_issuer_inline_with_model_validation(admin: User) -> None:
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(admin)
    form = {
        "name": "web",
        "description": "",
        "is_active": "on",
        "allowed_services": "",
        "allowed_versions": "",
        "allowed_origins": "",
        **{f"{prefix}-{k}": v for prefix in ("whitelist", "api_keys") for k, v in _EMPTY_FORMSET.items()},
        "token_issuers-TOTAL_FORMS": "1",
        "token_issuers-INITIAL_FORMS": "0",
        "token_issuers-MIN_NUM_FORMS": "0",
        "token_issuers-MAX_NUM_FORMS": "1000",
        "token_issuers-0-issuer": JWKS["issuer"],
        "token_issuers-0-is_active": "on",
        "token_issuers-0-jwks_url": JWKS["jwks_url"],
        "token_issuers-0-secret_env": "",
        "token_issuers-0-introspection_url": "",
        "token_issuers-0-audiences": "orders",
        "token_issuers-0-algorithms": "none",
        "token_issuers-0-user_claim": "sub",
        "token_issuers-0-scope_claim": "scope",
        "token_issuers-0-leeway_s": "30",
    }
    refused = client.post(reverse("admin:access_application_add"), form)
    assert refused.status_code == 200 and "never accepted" in refused.content.decode()
    form["token_issuers-0-algorithms"] = "RS256\nES256"
    saved = client.post(reverse("admin:access_application_add"), form)
    assert saved.status_code == 302, saved.content.decode()[:2000]
    issuer = TokenIssuer.objects.get()
    assert (issuer.application.name, issuer.algorithms, issuer.audiences) == ("web", ["RS256", "ES256"], ["orders"])
    page = client.get(reverse("admin:access_application_change", args=[issuer.application_id]))
    assert "Token issuers" in page.content.decode()


_EMPTY_FORMSET = {"TOTAL_FORMS": "0", "INITIAL_FORMS": "0", "MIN_NUM_FORMS": "0", "MAX_NUM_FORMS": "1000"}
