"""CORS through a live gateway: preflights answered by the gateway, upstream CORS headers replaced."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import requests

from tests.support.builders import make_app, make_key, make_service
from tests.support.servers import GunicornProcess
from tests.support.upstream import EchoRequestHandler, EchoUpstream, Received

SITE = "https://app.example.com"
SHOP = "https://shop.example.com"
EXPOSED = "X-Request-ID, X-Service-Version, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After"


def permissive_upstream(handler: EchoRequestHandler, received: Received) -> None:
    """An upstream that allows every origin itself: the gateway must not pass that on."""
    body = json.dumps({"ok": True}).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Access-Control-Allow-Origin", "*")
    handler.send_header("Access-Control-Allow-Credentials", "true")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def gateway(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream
) -> tuple[GunicornProcess, EchoUpstream, str]:
    echo_upstream.set_handler(permissive_upstream)
    make_service("orders", echo_upstream.url)
    make_service("catalog", echo_upstream.url)
    web = make_app(
        "web",
        allowed_origins=[SITE],
        entries=[{"path": "/api/v1/orders/*", "methods": ["GET", "POST"], "rate_limit": 100}],
    )
    make_app("shop", allowed_origins=[SHOP], entries=[{"path": "/api/v1/catalog/*", "is_public": True}])
    _, key = make_key(web)
    return gateway_server(workers=1), echo_upstream, key


def preflight(url: str, origin: str, method: str) -> requests.Response:
    return requests.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type, x-api-key",
        },
        timeout=10,
    )


@pytest.mark.django_db(transaction=True)
def test_preflight_from_listed_origin_is_answered_by_the_gateway(gateway) -> None:
    server, upstream, _ = gateway
    response = preflight(server.url + "/api/v1/orders/5", SITE, "POST")
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    assert response.headers["Access-Control-Allow-Headers"] == "content-type, x-api-key"
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in response.headers["Vary"]
    assert upstream.received == []  # no key needed, nothing forwarded


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "origin", "method"),
    [
        ("/api/v1/orders/5", "https://evil.example.com", "POST"),
        ("/api/v1/orders/5", SITE, "DELETE"),
        ("/api/v1/catalog/5", SITE, "GET"),
    ],
)
def test_preflight_otherwise_is_403(gateway, path: str, origin: str, method: str) -> None:
    server, upstream, _ = gateway
    response = preflight(server.url + path, origin, method)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "cors_origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert upstream.received == []


@pytest.mark.django_db(transaction=True)
def test_actual_request_from_listed_origin_gets_the_gateways_headers(gateway) -> None:
    server, upstream, key = gateway
    response = requests.get(server.url + "/api/v1/orders/5", headers={"Origin": SITE, "X-API-Key": key}, timeout=10)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert response.headers["Access-Control-Expose-Headers"] == EXPOSED
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" in response.headers["Vary"]
    assert upstream.last.header("Origin") == SITE  # the upstream still sees who called


@pytest.mark.django_db(transaction=True)
def test_unlisted_origin_gets_no_cors_headers_not_even_the_upstreams(gateway) -> None:
    server, _, key = gateway
    response = requests.get(
        server.url + "/api/v1/orders/5", headers={"Origin": "https://evil.example.com", "X-API-Key": key}, timeout=10
    )
    assert response.status_code == 200
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]


@pytest.mark.django_db(transaction=True)
def test_public_entry_uses_its_owners_origins(gateway) -> None:
    server, _, _ = gateway
    listed = requests.get(server.url + "/api/v1/catalog/1", headers={"Origin": SHOP}, timeout=10)
    assert listed.headers["Access-Control-Allow-Origin"] == SHOP
    unlisted = requests.get(server.url + "/api/v1/catalog/1", headers={"Origin": SITE}, timeout=10)
    assert "Access-Control-Allow-Origin" not in unlisted.headers
