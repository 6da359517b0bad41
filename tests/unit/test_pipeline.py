"""The pipeline as data: step order, error precedence and finalize (SPEC §4)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import MappingProxyType

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from gateway_core import snapshot
from gateway_core.context import RateDecision, RequestContext
from gateway_core.errors import ErrorCode, GatewayError
from gateway_core.patterns import compile_pattern
from gateway_core.snapshot import (
    CompiledApplication,
    CompiledEntry,
    CompiledRoute,
    Snapshot,
)
from routing import pipeline, proxy
from routing.compiler import compiled_version


def test_steps_are_listed_in_spec_order() -> None:
    assert [step.__name__ for step in pipeline.STEPS] == [
        "assign_request_id",
        "check_edge",
        "reject_unsafe_path",
        "reject_large_body",
        "answer_preflight",
        "resolve_route",
        "check_pinned_version",
        "identify_caller",
        "authorize_endpoint",
        "authorize_scopes",
        "choose_version",
        "authorize_version",
        "enforce_rate_limit",
    ]


def one_route_snapshot() -> Snapshot:
    v2 = compiled_version("v2", "http://v2:80", 100)
    route = CompiledRoute(
        service_id="s",
        service_name="svc",
        route_prefix="/api/v1/svc",
        upstream_prefix="/api/v1/svc",
        default=compiled_version("default", "http://default:80", 0),
        current_version=None,
        fallback_url=None,
        timeout_ms=None,
        versions=MappingProxyType({"v2": v2}),
        service_key=None,
        weighted_versions=(v2,),
        cumulative_weights=(100,),
    )
    open_to_all = CompiledEntry(
        id="e",
        application_id="a",
        pattern=compile_pattern("/api/v1/*"),
        methods=frozenset(),
        versions=frozenset(),
        rate_limit=None,
        is_public=True,
    )
    public_app = CompiledApplication(
        id="a",
        name="public",
        allowed_services=frozenset(),
        allowed_versions=frozenset(),
        allowed_origins=frozenset(),
        entries=(open_to_all,),
    )
    return Snapshot(
        version=1,
        loaded_at=datetime.now(tz=UTC),
        routes=(route,),
        routes_by_prefix=MappingProxyType({route.route_prefix: route}),
        applications=MappingProxyType({public_app.id: public_app}),
        keys=MappingProxyType({}),
        public_entries=public_app.entries,
    )


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[RequestContext]:
    """Serve from an in-memory snapshot; record what reached dispatch instead of forwarding."""
    forwarded: list[RequestContext] = []
    monkeypatch.setattr(snapshot, "current", one_route_snapshot)

    def fake_forward(ctx: RequestContext) -> HttpResponse:
        forwarded.append(ctx)
        return HttpResponse(b"ok", content_type="text/plain")

    monkeypatch.setattr(proxy, "forward", fake_forward)
    return forwarded


def get(path: str, **headers: str) -> HttpResponse:
    request = RequestFactory().get(path, **headers)
    request.META["RAW_URI"] = path
    return pipeline.handle(request)


def error_of(response: HttpResponse) -> dict[str, str]:
    return json.loads(response.content)["error"]


def test_unsafe_path_is_refused_before_routing(served: list[RequestContext]) -> None:
    response = get("/api/v1/nowhere/%2e%2e/x", HTTP_X_REQUEST_ID="abc-1")
    assert response.status_code == 400
    assert error_of(response) == {"code": "bad_path", "message": error_of(response)["message"], "request_id": "abc-1"}
    assert response["X-Request-ID"] == "abc-1"
    assert served == []


def test_unknown_route_then_unknown_pinned_version(served: list[RequestContext]) -> None:
    assert error_of(get("/api/v1/other"))["code"] == "route_not_found"
    pinned = get("/api/v1/svc/x", HTTP_X_SERVICE_VERSION="v9")
    assert (pinned.status_code, error_of(pinned)["code"]) == (404, "version_not_found")
    assert served == []


def test_an_oversized_content_length_is_refused_before_anything_else_is_looked_up(served) -> None:
    request = RequestFactory().post("/api/v1/other", data=b"x", content_type="text/plain")
    request.META["CONTENT_LENGTH"] = str(100 * 1024 * 1024)
    response = pipeline.handle(request)
    assert (response.status_code, error_of(response)["code"]) == (413, "payload_too_large")


def test_a_served_request_names_its_version_and_request_id(served: list[RequestContext]) -> None:
    response = get("/api/v1/svc/items")
    assert response.status_code == 200
    assert response["X-Service-Version"] == "v2"
    assert len(response["X-Request-ID"]) >= 16
    assert served[0].rest_path == "/items"
    pinned = get("/api/v1/svc/items", HTTP_X_SERVICE_VERSION="default")
    assert pinned["X-Service-Version"] == "default"


def test_rate_limit_headers_are_on_refusals_too(served, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(ctx: RequestContext) -> None:
        ctx.rate = RateDecision(limit=10, remaining=0, reset_s=42, allowed=False)
        raise GatewayError(429, ErrorCode.RATE_LIMITED, "slow down", headers={"Retry-After": "42"})

    monkeypatch.setattr(pipeline, "STEPS", (*pipeline.STEPS[:-1], refuse))
    response = get("/api/v1/svc/items")
    assert response.status_code == 429
    assert (response["RateLimit-Limit"], response["RateLimit-Remaining"], response["RateLimit-Reset"]) == (
        "10",
        "0",
        "42",
    )
    assert response["Retry-After"] == "42"


def test_an_unexpected_error_is_a_500_that_tells_nothing(served, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(ctx: RequestContext) -> None:
        raise RuntimeError("password=hunter2 in some message")

    monkeypatch.setattr(pipeline, "STEPS", (pipeline.STEPS[0], explode))
    response = get("/api/v1/svc/items")
    assert response.status_code == 500
    assert error_of(response)["code"] == "internal_error"
    assert b"hunter2" not in response.content


def test_a_step_that_answers_itself_ends_the_pipeline(served, monkeypatch: pytest.MonkeyPatch) -> None:
    def preflight(ctx: RequestContext) -> None:
        ctx.response = HttpResponse(status=204)

    steps = list(pipeline.STEPS)
    steps[steps.index(pipeline.answer_preflight)] = preflight
    monkeypatch.setattr(pipeline, "STEPS", tuple(steps))
    response = get("/api/v1/svc/items")
    assert response.status_code == 204
    assert served == []
