"""Model-layer validation of the five tables (SPEC §3): each bad value refused with a message."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from access.models import ApiKey, Application, EndpointWhitelist
from access.services import api_key_create
from routing.models import ServiceConfig, ServiceVersion

pytestmark = pytest.mark.django_db


def refused(obj: object, field: str) -> list[str]:
    """Run ``full_clean`` and return the messages on ``field``; fail when it passes."""
    with pytest.raises(ValidationError) as caught:
        obj.full_clean()  # type: ignore[attr-defined]  # a model instance
    errors = caught.value.message_dict
    assert field in errors, errors
    assert all(message.strip() for message in errors[field])
    return errors[field]


def service(**fields: object) -> ServiceConfig:
    values: dict[str, object] = {"service_name": "pipeline", "default_url": "http://127.0.0.1:7202"}
    values.update(fields)
    return ServiceConfig(**values)


# --- Service config ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pipeline", "auth", "a", "0svc", "my-service-2"])
def test_service_name_accepts_lower_case_letters_digits_and_dashes(name: str) -> None:
    service(service_name=name).full_clean()


@pytest.mark.parametrize("name", ["Pipeline", "-svc", "my_svc", "svc.v2", "svc/x", "", "sérvice", "a b"])
def test_service_name_outside_the_charset_is_refused(name: str) -> None:
    refused(service(service_name=name), "service_name")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:7000",
        "https://api.example.com",
        "https://api.example.com/base/path",
        "http://[::1]:8080",
        "queue://email",
        "queue://sms",
        "queue://ai",
        "queue://analytics",
        "queue://execution",
    ],
)
def test_upstream_urls_accept_http_https_and_the_five_queues(url: str) -> None:
    service(default_url=url, fallback_url=url).full_clean()
    svc = service()
    svc.save()
    ServiceVersion(service=svc, version="v1", url=url).full_clean()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("example.com", "http:// or https://"),
        ("http://", "http:// or https://"),
        ("queue://fax", "Unknown queue"),
        ("queue://", "Unknown queue"),
        ("queue://EMAIL", "Unknown queue"),
        ("http://user:pw@example.com", "no query, fragment or credentials"),
        ("http://example.com/?a=1", "no query, fragment or credentials"),
        ("http://example.com/#top", "no query, fragment or credentials"),
        ("http://example.com:99999", "valid URL"),
        ("http://example.com/a/../b", "'.' or '..'"),
    ],
)
def test_bad_upstream_urls_are_refused_everywhere(url: str, message: str) -> None:
    assert message in refused(service(default_url=url), "default_url")[0]
    assert message in refused(service(fallback_url=url), "fallback_url")[0]
    svc = service()
    svc.save()
    assert message in refused(ServiceVersion(service=svc, version="v1", url=url), "url")[0]


def test_route_prefix_defaults_to_api_v1_service_name() -> None:
    svc = service()
    svc.full_clean()
    svc.save()
    assert svc.route_prefix == "/api/v1/pipeline"


@pytest.mark.parametrize("prefix", ["/api/v1", "/api/v1/pipelines", "/api/v1/a/b-c/d_e", "/api/v1/~x"])
def test_route_prefix_accepts_clean_paths_under_api_v1(prefix: str) -> None:
    service(route_prefix=prefix).full_clean()


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("api/v1/x", "starts with '/'"),
        ("/api/v1/x/", "does not end with '/'"),
        ("/api/v1/./x", "'.' or '..'"),
        ("/api/v1/../x", "'.' or '..'"),
        ("/api/v1//x", "empty"),
        ("/api/v1/a b", "Invalid character"),
        ("/other", "/api/v1"),
        ("/api/v10", "/api/v1"),
        ("/api/v1/tasks", "served by the gateway itself"),
        ("/api/v1/tasks/x", "served by the gateway itself"),
    ],
)
def test_bad_route_prefixes_are_refused(prefix: str, message: str) -> None:
    assert message in " ".join(refused(service(route_prefix=prefix), "route_prefix"))


def test_route_prefix_is_unique() -> None:
    service(service_name="a", route_prefix="/api/v1/x").save()
    assert "already exists" in refused(service(service_name="b", route_prefix="/api/v1/x"), "route_prefix")[0]


def test_service_name_is_unique() -> None:
    service().save()
    assert "already exists" in refused(service(route_prefix="/api/v1/other"), "service_name")[0]


@pytest.mark.parametrize("prefix", [None, "", "/api/auth", "/"])
def test_upstream_prefix_accepts_null_empty_and_clean_paths(prefix: str | None) -> None:
    service(upstream_prefix=prefix).full_clean()


@pytest.mark.parametrize("prefix", ["api", "/api/", "/a/../b", "/a//b"])
def test_bad_upstream_prefixes_are_refused(prefix: str) -> None:
    refused(service(upstream_prefix=prefix), "upstream_prefix")


@pytest.mark.parametrize("timeout_ms", [0, -5, 3_600_001])
def test_timeout_out_of_range_is_refused(timeout_ms: int) -> None:
    refused(service(timeout_ms=timeout_ms), "timeout_ms")


def test_current_version_must_be_a_version_name() -> None:
    service(current_version="v2").full_clean()
    refused(service(current_version="v 2"), "current_version")


# --- Service version --------------------------------------------------------------------


@pytest.fixture
def saved_service() -> ServiceConfig:
    svc = service()
    svc.save()
    return svc


@pytest.mark.parametrize("weight", [0, 1, 500, 1000])
def test_version_weight_accepts_0_to_1000(saved_service: ServiceConfig, weight: int) -> None:
    ServiceVersion(service=saved_service, version="v2", url="http://127.0.0.1:1", weight=weight).full_clean()


@pytest.mark.parametrize(
    ("weight", "message"), [(-1, "greater than or equal to 0"), (1001, "less than or equal to 1000")]
)
def test_version_weight_outside_0_to_1000_is_refused(saved_service: ServiceConfig, weight: int, message: str) -> None:
    version = ServiceVersion(service=saved_service, version="v2", url="http://127.0.0.1:1", weight=weight)
    assert message in refused(version, "weight")[0]


@pytest.mark.parametrize("name", ["v 2", "", "-v2", "default", "v2/x", "x" * 33])
def test_bad_version_names_are_refused(saved_service: ServiceConfig, name: str) -> None:
    refused(ServiceVersion(service=saved_service, version=name, url="http://127.0.0.1:1"), "version")


def test_version_is_unique_per_service(saved_service: ServiceConfig) -> None:
    ServiceVersion.objects.create(service=saved_service, version="v2", url="http://127.0.0.1:1")
    with pytest.raises(ValidationError) as caught:
        ServiceVersion(service=saved_service, version="v2", url="http://127.0.0.1:2").full_clean()
    assert "already exists" in str(caught.value)
    other = service(service_name="other", route_prefix="/api/v1/other")
    other.save()
    ServiceVersion(service=other, version="v2", url="http://127.0.0.1:2").full_clean()


# --- Application --------------------------------------------------------------------------


def test_application_accepts_good_lists() -> None:
    Application(
        name="web",
        allowed_services=["pipeline", "auth"],
        allowed_versions=["v1", "v2"],
        allowed_origins=["https://app.example.com", "http://localhost:3000"],
    ).full_clean()
    Application(name="open").full_clean()  # empty lists: all services, all versions, no origins


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("allowed_services", ["Pipeline"], "lower-case letters"),
        ("allowed_services", "pipeline", "JSON list"),
        ("allowed_services", [1], "not a string"),
        ("allowed_services", ["a", "a"], "unique"),
        ("allowed_versions", ["v 1"], "Item 1"),
        ("allowed_versions", {"v1": 1}, "JSON list"),
        ("allowed_origins", ["https://app.example.com/"], "not an origin"),
        ("allowed_origins", ["app.example.com"], "not an origin"),
        ("allowed_origins", ["ftp://app.example.com"], "not an origin"),
        ("allowed_origins", ["https://app.example.com?x=1"], "not an origin"),
        ("allowed_origins", ["https://u@app.example.com"], "not an origin"),
        ("allowed_origins", [" https://app.example.com"], "not an origin"),
    ],
)
def test_application_bad_lists_are_refused(field: str, value: object, message: str) -> None:
    assert message in " ".join(refused(Application(name="web", **{field: value}), field))


def test_application_name_is_unique_and_required() -> None:
    Application.objects.create(name="web")
    assert "already exists" in refused(Application(name="web"), "name")[0]
    refused(Application(name=""), "name")


# --- Endpoint whitelist -------------------------------------------------------------------


@pytest.fixture
def app() -> Application:
    return Application.objects.create(name="web")


@pytest.mark.parametrize(
    "path",
    ["/api/v1/pipelines", "/api/v1/pipelines/{id}", "/api/v1/pipelines/*", "/api/v1/*", "/*", "/api/v1/a/{x}/b"],
)
def test_whitelist_accepts_well_formed_patterns(app: Application, path: str) -> None:
    EndpointWhitelist(application=app, endpoint_path=path).full_clean()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("api/v1/x", "starts with '/'"),
        ("/api/v1/x/", "empty"),
        ("/api/v1//x", "empty"),
        ("/api/v1/../x", "'..'"),
        ("/api/v1/./x", "'.'"),
        ("/api/v1/pipe*", "final '/*'"),
        ("/api/v1/*/x", "final '/*'"),
        ("/api/v1/{id", "whole segment"),
        ("/api/v1/x{id}", "whole segment"),
        ("/api/v1/{1d}", "whole segment"),
        ("/api/v1/a b", "Invalid character"),
    ],
)
def test_whitelist_malformed_patterns_are_refused(app: Application, path: str, message: str) -> None:
    assert message in refused(EndpointWhitelist(application=app, endpoint_path=path), "endpoint_path")[0]


def test_whitelist_methods_accept_upper_case_known_methods(app: Application) -> None:
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    EndpointWhitelist(application=app, endpoint_path="/api/v1/x", allowed_methods=methods).full_clean()


@pytest.mark.parametrize("methods", [["get"], ["Get"], ["FETCH"], ["CONNECT"], ["TRACE"], ["GET", "GET"], "GET"])
def test_whitelist_bad_methods_are_refused(app: Application, methods: object) -> None:
    refused(EndpointWhitelist(application=app, endpoint_path="/api/v1/x", allowed_methods=methods), "allowed_methods")


@pytest.mark.parametrize("rate", [1, 60, 100_000, None])
def test_rate_limit_accepts_at_least_one_or_empty(app: Application, rate: int | None) -> None:
    EndpointWhitelist(application=app, endpoint_path="/api/v1/x", rate_limit=rate).full_clean()


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_limit_below_one_is_refused(app: Application, rate: int) -> None:
    refused(EndpointWhitelist(application=app, endpoint_path="/api/v1/x", rate_limit=rate), "rate_limit")


def test_whitelist_versions_are_checked(app: Application) -> None:
    refused(
        EndpointWhitelist(application=app, endpoint_path="/api/v1/x", allowed_versions=["v1", "bad version"]),
        "allowed_versions",
    )


def test_whitelist_path_is_unique_per_application(app: Application) -> None:
    EndpointWhitelist.objects.create(application=app, endpoint_path="/api/v1/x")
    with pytest.raises(ValidationError) as caught:
        EndpointWhitelist(application=app, endpoint_path="/api/v1/x").full_clean()
    assert "already exists" in str(caught.value)


# --- API key ------------------------------------------------------------------------------


def test_api_key_create_stores_prefix_and_argon2id_hash_only(app: Application) -> None:
    key, plaintext = api_key_create(application=app, name="ci")
    prefix, _, secret = plaintext.partition(".")
    stored = ApiKey.objects.get(pk=key.pk)
    assert stored.key_prefix == prefix
    assert stored.api_key_hash.startswith("$argon2id$")
    row = [str(value) for value in ApiKey.objects.filter(pk=key.pk).values().get().values()]
    assert not any(secret in value for value in row)


def test_api_key_prefix_is_unique(app: Application) -> None:
    key, _ = api_key_create(application=app, name="a")
    clash = ApiKey(application=app, name="b", key_prefix=key.key_prefix, api_key_hash="$argon2id$x")
    with pytest.raises(ValidationError) as caught:
        clash.validate_unique()
    assert "already exists" in str(caught.value)


# --- The tables themselves -----------------------------------------------------------------


def test_tables_have_the_spec_names_uuid_keys_and_timestamps() -> None:
    tables = {
        ServiceConfig: "gateway_service_config",
        ServiceVersion: "gateway_service_version",
        Application: "gateway_application",
        EndpointWhitelist: "gateway_endpoint_whitelist",
        ApiKey: "gateway_api_key",
    }
    existing = set(connection.introspection.table_names())
    for model, table in tables.items():
        assert model._meta.db_table == table
        assert table in existing
        assert model._meta.pk.name == "id"
        assert model._meta.pk.default is uuid.uuid4
        names = {f.name for f in model._meta.get_fields()}
        assert {"created_at", "updated_at"} <= names, model
