"""Hop-by-hop filtering both ways and the headers sent upstream (SPEC §4.7)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from gateway_core.conf import GatewayConfig
from gateway_core.errors import GatewayError
from routing.bodies import BodyStream
from routing.headers import (
    GATEWAY_HEADER_PREFIXES,
    REQUEST_DROP,
    client_headers,
    filter_hop_by_hop,
    upstream_request_headers,
)
from routing.responses import RawSetCookie


def test_hop_by_hop_headers_and_those_named_by_connection_are_removed() -> None:
    headers = [
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic abc"),
        ("Proxy-Foo", "1"),
        ("TE", "trailers"),
        ("Trailer", "Expires"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("X-Secret-Hop", "1"),
        ("Accept", "a"),
        ("Accept", "b"),
        ("Cache-Control", "no-cache"),
    ]
    assert filter_hop_by_hop(headers) == [("Accept", "a"), ("Accept", "b"), ("Cache-Control", "no-cache")]


def test_client_sent_gateway_headers_and_the_api_key_are_removed() -> None:
    headers = [
        ("X-Api-Key", "gk_x.secret"),
        ("X-Consumer-Id", "spoofed"),
        ("X-Consumer-Name", "spoofed"),
        ("X-Gateway-Fallback", "1"),
        ("X-Service-Key", "spoofed"),
        ("X-Custom", "kept"),
    ]
    assert filter_hop_by_hop(headers, REQUEST_DROP, GATEWAY_HEADER_PREFIXES) == [("X-Custom", "kept")]


def context(meta: dict[str, object], *, key: bool = False, service_key: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        request=SimpleNamespace(META=meta),
        request_id="rid-1",
        api_key=SimpleNamespace(application_id="app-1") if key else None,
        application=SimpleNamespace(id="app-1", name="shop") if key else None,
        user=None,
        scopes=frozenset(),
        route=SimpleNamespace(service_key=service_key),
    )


BASE_META = {
    "REMOTE_ADDR": "10.0.0.5",
    "wsgi.url_scheme": "http",
    "HTTP_HOST": "gw.example:4200",
    "HTTP_X_API_KEY": "gk_x.secret",
    "HTTP_ACCEPT": "*/*",
    "CONTENT_TYPE": "application/json",
    "CONTENT_LENGTH": "12",
}


def test_upstream_headers_add_forwarding_ids_and_consumer() -> None:
    meta = {**BASE_META, "HTTP_X_FORWARDED_FOR": "1.2.3.4", "HTTP_X_FORWARDED_PROTO": "https"}
    headers = upstream_request_headers(context(meta, key=True, service_key="sk"), "up:8080", GatewayConfig())  # type: ignore[arg-type]
    assert headers["Host"] == "up:8080"
    # From an untrusted peer a client's X-Forwarded-For is dropped first: only the peer remains.
    assert headers["X-Forwarded-For"] == "10.0.0.5"
    assert headers["X-Forwarded-Proto"] == "http"  # the peer is not a trusted proxy
    assert headers["X-Forwarded-Host"] == "gw.example:4200"
    assert headers["X-Request-ID"] == "rid-1"
    assert headers["X-Consumer-ID"] == "app-1"
    assert headers["X-Consumer-Name"] == "shop"
    assert headers["X-Service-Key"] == "sk"
    assert headers["Content-Length"] == "12"
    assert headers["Content-Type"] == "application/json"
    assert "X-Api-Key" not in headers


def test_a_trusted_proxy_keeps_its_forwarded_proto_and_host() -> None:
    config = GatewayConfig.from_mapping({"TRUSTED_PROXIES": ["10.0.0.0/8"]})
    meta = {**BASE_META, "HTTP_X_FORWARDED_PROTO": "https", "HTTP_X_FORWARDED_HOST": "api.example.com"}
    headers = upstream_request_headers(context(meta), "up:80", config)  # type: ignore[arg-type]
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-Host"] == "api.example.com"
    assert "X-Consumer-ID" not in headers and "X-Service-Key" not in headers


def test_client_headers_read_the_wsgi_environ() -> None:
    assert sorted(client_headers({"HTTP_X_THING": "1", "CONTENT_LENGTH": "", "PATH_INFO": "/"})) == [("X-Thing", "1")]


def test_the_streamed_body_is_capped_while_it_streams() -> None:
    body = BodyStream(io.BytesIO(b"x" * 100), limit_bytes=64)
    assert body.read(50) == b"x" * 50
    with pytest.raises(GatewayError) as refused:
        body.read(50)
    assert refused.value.status == 413


def test_a_set_cookie_value_is_emitted_unchanged() -> None:
    cookie = RawSetCookie("sid=abc; Path=/; HttpOnly; SameSite=Lax")
    assert cookie.output(header="") == "sid=abc; Path=/; HttpOnly; SameSite=Lax"
    assert (cookie.key, cookie.coded_value) == ("sid", "abc")


def test_the_one_pass_builder_forwards_what_the_header_filter_keeps() -> None:
    meta = {
        **BASE_META,
        "HTTP_CONNECTION": "keep-alive, X-Hop, Content-Type",
        "HTTP_X_HOP": "dropped: named by Connection",
        "HTTP_KEEP_ALIVE": "timeout=5",
        "HTTP_PROXY_AUTHORIZATION": "Basic x",
        "HTTP_PROXY_ANYTHING": "x",
        "HTTP_TE": "trailers",
        "HTTP_UPGRADE": "h2c",
        "HTTP_X_CONSUMER_ID": "spoofed",
        "HTTP_X_GATEWAY_FALLBACK": "spoofed",
        "HTTP_X_SERVICE_KEY": "spoofed",
        "HTTP_COOKIE": "a=1; b=2",
        "HTTP_ACCEPT_ENCODING": "gzip",
        "HTTP_X_CUSTOM": "kept",
    }
    expected = dict(filter_hop_by_hop(client_headers(meta), REQUEST_DROP, GATEWAY_HEADER_PREFIXES))
    headers = upstream_request_headers(context(meta), "up:80", GatewayConfig())  # type: ignore[arg-type]
    gateways_own = {
        "Host",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Request-ID",
        "Content-Length",
    }
    assert {name: value for name, value in headers.items() if name not in gateways_own} == expected
    assert "Content-Type" not in headers  # named by Connection
    assert headers["Cookie"] == "a=1; b=2" and headers["X-Custom"] == "kept"
