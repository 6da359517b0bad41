"""Config document checks that need no database: shapes, types, model rules, duplicates."""

from __future__ import annotations

from admin_panel.api.errors import _field_errors
from admin_panel.config_io import Change, ImportDiff, Problem, _Parser


def problems_of(document: object) -> dict[str, str]:
    parser = _Parser()
    parser.document(document)
    return {p.location: p.message for p in parser.problems}


def test_a_valid_document_has_no_problems_and_is_normalized() -> None:
    parser = _Parser()
    services, applications = parser.document(
        {
            "services": [
                {"service_name": "billing", "default_url": "http://h", "current_version": "", "versions": []},
            ],
            "applications": [{"name": "web", "whitelist": [{"endpoint_path": "/api/v1/billing/*"}]}],
        }
    )
    assert parser.problems == []
    billing = services["billing"].values
    assert billing["route_prefix"] == "/api/v1/billing"  # filled by the model's clean()
    assert billing["current_version"] is None  # "" means unset
    assert billing["is_active"] is True
    assert applications["web"].children["/api/v1/billing/*"].values["allowed_methods"] == []


def test_every_problem_is_named_with_its_location() -> None:
    problems = problems_of(
        {
            "services": [
                {"service_name": "ok", "default_url": "http://h", "timeout_ms": True, "versions": [{"url": "x"}]},
                {"service_name": "ok", "default_url": "http://h2", "route_prefix": "/api/v1/ok"},
                {"service_name": "z", "default_url": "gopher://h"},
            ],
            "applications": [{"name": "web", "whitelist": [{"endpoint_path": "/a"}, {"endpoint_path": "/a"}]}],
            "extra": 1,
        }
    )
    assert problems.keys() >= {
        "extra",
        "services[0].timeout_ms",
        "services[0].versions[0].version",
        "services[0].versions[0].url",
        "services[1].service_name",
        "services[2].default_url",
        "applications[0].whitelist[1].endpoint_path",
    }
    assert problems["services[0].timeout_ms"] == "Must be an integer or null."
    assert "Duplicate of services[0]" in problems["services[1].service_name"]


def test_two_services_may_not_share_a_route_prefix() -> None:
    problems = problems_of(
        {
            "services": [
                {"service_name": "a", "default_url": "http://h", "route_prefix": "/api/v1/x"},
                {"service_name": "b", "default_url": "http://h", "route_prefix": "/api/v1/x"},
            ],
            "applications": [],
        }
    )
    assert "Also used by services[0]" in problems["services[1].route_prefix"]


def test_diff_renders_kind_key_and_changed_fields() -> None:
    diff = ImportDiff(dry_run=True)
    diff.updated.append(Change("service", {"service_name": "a"}, ("default_url",)))
    diff.created.append(Change("application", {"name": "web"}))
    assert diff.as_dict() == {
        "dry_run": True,
        "created": [{"kind": "application", "key": {"name": "web"}}],
        "updated": [{"kind": "service", "key": {"service_name": "a"}, "fields": ["default_url"]}],
        "deleted": [],
    }
    assert str(Problem("services[0].url", "Bad.")) == "services[0].url: Bad."


def test_nested_drf_errors_are_flattened_to_field_paths() -> None:
    detail = {"allowed_origins": {1: ["Not an origin."]}, "non_field_errors": ["Conflict."], "name": ["Required."]}
    assert _field_errors(detail) == {
        "allowed_origins.1": ["Not an origin."],
        "non_field_errors": ["Conflict."],
        "name": ["Required."],
    }
    assert _field_errors([{"a": ["x"]}, {}]) == {"[0].a": ["x"]}


def test_nul_characters_are_refused_like_the_api_does() -> None:
    problems = problems_of(
        {"services": [], "applications": [{"name": "x\x00", "allowed_origins": ["https://a.example\x00"]}]}
    )
    assert problems["applications[0].name"] == "Null characters are not allowed."
    assert problems["applications[0].allowed_origins"] == "Null characters are not allowed."
