"""Declarative config: export, all-or-nothing import with dry-run diff, and the shell commands."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from django.contrib.admin.models import LogEntry
from django.core.management import CommandError, call_command

from access.models import ApiKey, Application, EndpointWhitelist
from admin_panel.config_io import config_export
from routing.models import ServiceConfig, ServiceVersion
from tests.support.admin_api import client_for, make_user, use_fast_password_hashing
from tests.support.builders import make_app, make_key, make_service

pytestmark = pytest.mark.django_db

EXPORT = "/admin/config/export"
IMPORT = "/admin/config/import"


@pytest.fixture(autouse=True)
def _fast_hashing(request, settings) -> None:
    use_fast_password_hashing(request, settings)


@pytest.fixture
def staff():
    return make_user("ops")


@pytest.fixture
def api(staff):
    return client_for(staff)


@pytest.fixture
def config():
    """A small config with every kind of row, and a key."""
    make_service(
        "billing",
        "http://127.0.0.1:9001",
        versions=[("v1", "http://127.0.0.1:9101", 80), ("v2", "http://127.0.0.1:9102", 20)],
        current_version="v1",
        timeout_ms=2500,
    )
    make_service("mail", "queue://email", route_prefix="/api/v1/notify", upstream_prefix="")
    web = make_app(
        "web",
        allowed_services=["billing"],
        allowed_origins=["https://app.example.com"],
        entries=[
            {"path": "/api/v1/billing/*", "methods": ["GET", "POST"], "rate_limit": 60},
            {"path": "/api/v1/notify", "is_public": True},
        ],
    )
    make_key(web, name="ci")
    return web


def snapshot_rows() -> dict[str, list]:
    """Every config row's values, for proving that nothing changed."""
    return {
        "services": list(ServiceConfig.objects.order_by("service_name").values()),
        "versions": list(ServiceVersion.objects.order_by("version").values()),
        "applications": list(Application.objects.order_by("name").values()),
        "entries": list(EndpointWhitelist.objects.order_by("endpoint_path").values()),
        "keys": list(ApiKey.objects.order_by("name").values()),
    }


def test_export_has_every_row_by_natural_key_and_key_metadata_only(api, config) -> None:
    response = api.get(EXPORT)
    assert response.status_code == 200
    document = response.json()
    assert document["format_version"] == 1
    billing = next(s for s in document["services"] if s["service_name"] == "billing")
    assert billing["timeout_ms"] == 2500
    assert [v["version"] for v in billing["versions"]] == ["v1", "v2"]
    assert "id" not in billing
    mail = next(s for s in document["services"] if s["service_name"] == "mail")
    assert (mail["route_prefix"], mail["upstream_prefix"]) == ("/api/v1/notify", "")
    (web,) = document["applications"]
    assert [e["endpoint_path"] for e in web["whitelist"]] == ["/api/v1/billing/*", "/api/v1/notify"]
    (key,) = web["api_keys"]
    assert set(key) == {"name", "key_prefix", "expires_at", "is_active", "last_used_at", "created_at"}
    assert ApiKey.objects.get().api_key_hash not in response.content.decode()


def test_importing_the_export_is_a_no_op(api, config) -> None:
    document = api.get(EXPORT).json()
    before = snapshot_rows()
    logged = LogEntry.objects.count()
    response = api.post(IMPORT, document, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"dry_run": False, "created": [], "updated": [], "deleted": []}
    assert snapshot_rows() == before
    assert LogEntry.objects.count() == logged


@pytest.mark.parametrize("value", ["", "maybe", "2"])
def test_an_unclear_dry_run_is_refused_and_changes_nothing(api, config, value: str) -> None:
    """``?dry_run=`` (empty) is not "apply": an import or rollback is applied only when asked plainly."""
    document = api.get(EXPORT).json()
    document["services"] = []
    before = snapshot_rows()
    response = api.post(f"{IMPORT}?dry_run={value}", document, format="json")
    assert response.status_code == 400, response.content
    assert "dry_run" in response.json()["error"]["fields"]
    assert snapshot_rows() == before


def test_dry_run_shows_the_diff_and_changes_nothing(api, config) -> None:
    document = api.get(EXPORT).json()
    billing = next(s for s in document["services"] if s["service_name"] == "billing")
    billing["default_url"] = "http://127.0.0.1:9999"
    billing["versions"] = [v for v in billing["versions"] if v["version"] != "v2"]
    billing["versions"].append({"version": "v3", "url": "http://127.0.0.1:9103", "weight": 5})
    document["services"] = [s for s in document["services"] if s["service_name"] != "mail"]
    document["applications"].append({"name": "partner", "whitelist": [{"endpoint_path": "/api/v1/billing"}]})
    before = snapshot_rows()

    response = api.post(f"{IMPORT}?dry_run=1", document, format="json")
    assert response.status_code == 200, response.content
    diff = response.json()
    assert diff["dry_run"] is True
    assert {"kind": "service", "key": {"service_name": "billing"}, "fields": ["default_url"]} in diff["updated"]
    assert {"kind": "service_version", "key": {"service": "billing", "version": "v3"}} in diff["created"]
    assert {"kind": "application", "key": {"name": "partner"}} in diff["created"]
    assert {
        "kind": "whitelist_entry",
        "key": {"application": "partner", "endpoint_path": "/api/v1/billing"},
    } in diff["created"]
    assert {"kind": "service_version", "key": {"service": "billing", "version": "v2"}} in diff["deleted"]
    assert {"kind": "service", "key": {"service_name": "mail"}} in diff["deleted"]
    assert snapshot_rows() == before

    applied = api.post(IMPORT, document, format="json")
    assert applied.status_code == 200
    assert {k: v for k, v in applied.json().items() if k != "dry_run"} == {
        k: v for k, v in diff.items() if k != "dry_run"
    }
    assert ServiceConfig.objects.get(service_name="billing").default_url == "http://127.0.0.1:9999"
    assert set(ServiceVersion.objects.values_list("version", flat=True)) == {"v1", "v3"}
    assert not ServiceConfig.objects.filter(service_name="mail").exists()
    assert EndpointWhitelist.objects.filter(application__name="partner").count() == 1
    assert api.post(IMPORT, document, format="json").json()["created"] == []  # now in sync


def test_invalid_document_changes_nothing_and_names_every_problem(api, config) -> None:
    document = api.get(EXPORT).json()
    good = copy.deepcopy(document)
    document["services"][0]["default_url"] = "ftp://nope"
    document["services"][0]["versions"][1]["weight"] = 5000
    document["services"].append({"service_name": "new-one", "default_url": "http://127.0.0.1:1"})
    document["services"].append({"service_name": "billing", "default_url": "http://127.0.0.1:2"})
    document["applications"][0]["whitelist"][0]["allowed_methods"] = ["get"]
    document["applications"][0]["is_active"] = "yes"
    document["applications"].append({"name": "x", "colour": "blue"})
    before = snapshot_rows()

    response = api.post(IMPORT, document, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config"
    locations = {p["location"] for p in error["problems"]}
    assert {
        "services[0].default_url",
        "services[0].versions[1].weight",
        "services[3].service_name",
        "applications[0].is_active",
        "applications[1].colour",
    } <= locations
    assert snapshot_rows() == before  # the valid new service was not created either
    assert api.post(IMPORT, good, format="json").json()["updated"] == []


@pytest.mark.parametrize(
    ("document", "location"),
    [
        ([], "$"),
        ({"services": []}, "applications"),
        ({"services": {}, "applications": []}, "services"),
        ({"services": [7], "applications": []}, "services[0]"),
        ({"services": [], "applications": [], "format_version": 2}, "format_version"),
        ({"services": [{"service_name": "a"}], "applications": []}, "services[0].default_url"),
    ],
)
def test_malformed_documents_get_400_with_a_location(api, document, location) -> None:
    response = api.post(IMPORT, document, format="json")
    assert response.status_code == 400
    assert location in {p["location"] for p in response.json()["error"]["problems"]}


def test_import_never_creates_changes_or_deletes_keys(api, config) -> None:
    document = api.get(EXPORT).json()
    (key_meta,) = document["applications"][0]["api_keys"]
    key_meta["is_active"] = False
    document["applications"][0]["api_keys"].append({"name": "forged", "key_prefix": "gk_000000000000"})
    keys_before = list(ApiKey.objects.values())
    assert api.post(IMPORT, document, format="json").json()["updated"] == []
    assert list(ApiKey.objects.values()) == keys_before

    # Deleting the application would delete its key: refused, nothing changed.
    without_web = {**document, "applications": []}
    refused = api.post(IMPORT, without_web, format="json")
    assert refused.status_code == 400
    assert "API keys" in refused.json()["error"]["problems"][0]["message"]
    assert list(ApiKey.objects.values()) == keys_before


def test_rename_moves_a_route_prefix_within_one_import(api, config) -> None:
    document = api.get(EXPORT).json()
    mail = next(s for s in document["services"] if s["service_name"] == "mail")
    mail["service_name"] = "notify"
    response = api.post(IMPORT, document, format="json")
    assert response.status_code == 200, response.content
    assert ServiceConfig.objects.get(route_prefix="/api/v1/notify").service_name == "notify"


def test_import_is_audited_with_the_user(api, staff, config) -> None:
    document = api.get(EXPORT).json()
    before = document["applications"][0]["description"]
    document["applications"][0]["description"] = "changed by import"
    api.post(IMPORT, document, format="json")
    entry = LogEntry.objects.get(object_id=str(config.id))
    assert entry.user_id == staff.id
    assert entry.get_change_message() == f"Changed Description: {before or '(empty)'} → changed by import."


@pytest.mark.django_db(transaction=True)
def test_import_reloads_the_config_once(api, config) -> None:
    from routing import reload

    document = api.get(EXPORT).json()
    document["services"][0]["is_active"] = False
    document["applications"][0]["description"] = "x"
    before = reload.revision_read()
    assert api.post(IMPORT, document, format="json").status_code == 200
    assert reload.revision_read() == before + 1  # one bump for the whole import


# --- manage.py gateway_export / gateway_import -----------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_commands_round_trip_json_and_yaml(tmp_path, config, suffix, capsys) -> None:
    path = tmp_path / f"gateway{suffix}"
    call_command("gateway_export", str(path))
    text = path.read_text()
    document = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert document == json.loads(json.dumps(config_export(), default=str))
    call_command("gateway_import", str(path))
    assert json.loads(capsys.readouterr().out) == {"dry_run": False, "created": [], "updated": [], "deleted": []}


def test_command_dry_run_and_invalid_file(tmp_path, config, capsys, staff) -> None:
    path = tmp_path / "gateway.yaml"
    call_command("gateway_export", str(path))
    document = yaml.safe_load(path.read_text())
    document["services"] = []
    path.write_text(yaml.safe_dump(document))
    before = snapshot_rows()
    call_command("gateway_import", str(path), "--dry-run")
    diff = json.loads(capsys.readouterr().out)
    assert diff["dry_run"] is True
    assert len([d for d in diff["deleted"] if d["kind"] == "service"]) == 2
    assert snapshot_rows() == before

    document["services"] = [{"service_name": "Bad Name", "default_url": "http://h"}]
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(CommandError, match=r"services\[0\]\.service_name"):
        call_command("gateway_import", str(path), "--user", "ops")
    assert snapshot_rows() == before
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("gateway_import", str(tmp_path / "broken.json"))
    with pytest.raises(CommandError, match="No staff user"):
        call_command("gateway_import", str(path), "--user", "nobody")
