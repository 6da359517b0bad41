"""Preflight answers and CORS response headers (access/cors.py)."""

from __future__ import annotations

import pytest
from django.http import HttpResponse

from access.cors import EXPOSED_HEADERS, answer_preflight, apply_cors
from gateway_core.errors import GatewayError
from gateway_core.snapshot import Snapshot
from tests.unit.test_policy import application, context, entry, snapshot

SITE = "https://app.example.com"


@pytest.fixture
def world() -> Snapshot:
    browser_app = application(
        "web",
        [entry("web", "/api/v1/orders/*", methods=["GET", "POST"])],
        origins=[SITE],
    )
    public_app = application(
        "pub", [entry("pub", "/api/v1/catalog/*", is_public=True)], origins=["https://shop.example.com"]
    )
    no_origins = application("srv", [entry("srv", "/api/v1/billing/*")])
    return snapshot([browser_app, public_app, no_origins])


def preflight(world: Snapshot, path: str, origin: str, method: str = "POST", headers: str = "content-type"):
    return context(
        world,
        path,
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def test_preflight_for_listed_origin_is_answered_204(world: Snapshot) -> None:
    ctx = preflight(world, "/api/v1/orders/7", SITE, headers="Content-Type, X-Request-ID")
    answer_preflight(ctx)
    response = ctx.response
    assert response is not None and response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == SITE
    assert response["Access-Control-Allow-Methods"] == "POST"
    assert response["Access-Control-Allow-Headers"] == "Content-Type, X-Request-ID, X-API-Key"
    assert response["Access-Control-Max-Age"] == "600"
    assert response["Vary"] == "Origin"


def test_preflight_needs_no_key(world: Snapshot) -> None:
    ctx = preflight(world, "/api/v1/orders/7", SITE)
    answer_preflight(ctx)
    assert ctx.api_key is None and ctx.response is not None


@pytest.mark.parametrize(
    ("path", "origin", "method"),
    [
        ("/api/v1/orders/7", "https://evil.example.com", "POST"),  # origin not listed
        ("/api/v1/orders/7", SITE, "DELETE"),  # method not on the entry
        ("/api/v1/billing/1", SITE, "GET"),  # the app listing the origin has no entry here
        ("/api/v1/billing/1", "https://shop.example.com", "GET"),
    ],
)
def test_preflight_otherwise_is_403(world: Snapshot, path: str, origin: str, method: str) -> None:
    with pytest.raises(GatewayError) as caught:
        answer_preflight(preflight(world, path, origin, method))
    assert caught.value.status == 403 and caught.value.code == "cors_origin_not_allowed"


def test_requested_headers_are_echoed_only_as_header_names(world: Snapshot) -> None:
    ctx = preflight(world, "/api/v1/orders/7", SITE, headers="x-api-key, bad header, ok-one")
    answer_preflight(ctx)
    assert ctx.response is not None
    assert ctx.response["Access-Control-Allow-Headers"] == "x-api-key, ok-one"


def test_plain_options_without_preflight_headers_is_left_to_the_pipeline(world: Snapshot) -> None:
    ctx = context(world, "/api/v1/orders/7", method="OPTIONS", headers={"Origin": SITE})
    answer_preflight(ctx)
    assert ctx.response is None


def upstream_response() -> HttpResponse:
    response = HttpResponse("{}")
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Allow-Credentials"] = "true"
    response["Vary"] = "Accept-Encoding"
    return response


def test_actual_request_from_callers_listed_origin_gets_gateway_headers(world: Snapshot) -> None:
    ctx = context(world, "/api/v1/orders/7", headers={"Origin": SITE})
    ctx.application = world.applications["web"]
    ctx.entry = ctx.application.entries[0]
    response = upstream_response()
    apply_cors(ctx, response)
    assert response["Access-Control-Allow-Origin"] == SITE
    assert response["Access-Control-Expose-Headers"] == EXPOSED_HEADERS
    assert "Access-Control-Allow-Credentials" not in response
    assert response["Vary"] == "Accept-Encoding, Origin"


def test_public_entry_uses_its_owners_origins(world: Snapshot) -> None:
    ctx = context(world, "/api/v1/catalog/1", headers={"Origin": "https://shop.example.com"})
    ctx.entry, ctx.entry_owner = world.applications["pub"].entries[0], world.applications["pub"]
    response = upstream_response()
    apply_cors(ctx, response)
    assert response["Access-Control-Allow-Origin"] == "https://shop.example.com"


def test_unlisted_origin_gets_no_cors_headers_and_upstreams_are_removed(world: Snapshot) -> None:
    ctx = context(world, "/api/v1/orders/7", headers={"Origin": "https://evil.example.com"})
    ctx.application = world.applications["web"]
    response = upstream_response()
    apply_cors(ctx, response)
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]
    assert response["Vary"] == "Accept-Encoding"


def test_no_origin_still_strips_upstream_cors_headers(world: Snapshot) -> None:
    ctx = context(world, "/api/v1/orders/7")
    response = upstream_response()
    apply_cors(ctx, response)
    assert "Access-Control-Allow-Origin" not in response


def test_gateway_preflight_answer_is_left_alone(world: Snapshot) -> None:
    ctx = preflight(world, "/api/v1/orders/7", SITE)
    answer_preflight(ctx)
    assert ctx.response is not None
    apply_cors(ctx, ctx.response)
    assert ctx.response["Access-Control-Allow-Methods"] == "POST"
