"""The proxy through a real gunicorn gateway to real upstreams on loopback (SPEC §4.4, §4.7).

Every test asserts what the upstream actually received, and what the client got back.
"""

from __future__ import annotations

import gzip
import json

import pytest
import requests

from tests.support.builders import make_app, make_key, make_public_app, make_service
from tests.support.upstream import EchoRequestHandler, EchoUpstream, Received

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def gateway(gateway_server, echo_upstream: EchoUpstream):
    """A 1-worker gateway; service ``echo`` -> the echo upstream, open to everyone."""
    make_service("echo", echo_upstream.url)
    make_public_app()
    return gateway_server(workers=1, env={"GATEWAY_SERVICE_KEY_ECHO": "service-secret"})


def raw_request(url: str, request: bytes, timeout_s: float = 5.0) -> bytes:
    """Send ``request`` bytes as is on a new connection and return the whole answer."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(request)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def answer(status: int, headers: list[tuple[str, str]], body: bytes = b""):
    """An upstream handler answering ``status``, ``headers`` and ``body`` exactly."""

    def handler(h: EchoRequestHandler, received: Received) -> None:
        h.send_response(status)
        for name, value in headers:
            h.send_header(name, value)
        if status not in (204, 304) and not any(n.lower() == "content-length" for n, _ in headers):
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if received.method != "HEAD" and status not in (204, 304):
            h.wfile.write(body)

    return handler


# --- What reaches the upstream --------------------------------------------------------------


def test_raw_path_and_query_reach_the_upstream_byte_for_byte(gateway, echo_upstream: EchoUpstream) -> None:
    target = "/api/v1/echo/a%2fb/%7Ec/caf%C3%A9;p=1?q=%7e&z=a+b%zz&&empty=&x=%2F"
    answer_bytes = raw_request(gateway.url, f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())
    assert answer_bytes.startswith(b"HTTP/1.1 200")
    assert echo_upstream.last.target == target


def test_a_lone_question_mark_is_kept(gateway, echo_upstream: EchoUpstream) -> None:
    raw_request(gateway.url, b"GET /api/v1/echo/x? HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert echo_upstream.last.target == "/api/v1/echo/x?"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_methods_and_bodies_are_forwarded_unchanged(gateway, echo_upstream: EchoUpstream, method: str) -> None:
    body = b'{"a": 1, "bytes": "\\u00e9"}\n\x00\xff'
    response = requests.request(
        method, gateway.url + "/api/v1/echo/things", data=body, headers={"Content-Type": "x/y"}, timeout=5
    )
    assert response.status_code == 200
    assert echo_upstream.last.method == method
    assert echo_upstream.last.body == body
    assert echo_upstream.last.header("Content-Length") == str(len(body))
    assert echo_upstream.last.header("Content-Type") == "x/y"


def test_a_chunked_upload_is_streamed_upstream(gateway, echo_upstream: EchoUpstream) -> None:
    parts = [b"first,", b"second,", b"x" * 100_000]
    response = requests.post(gateway.url + "/api/v1/echo/upload", data=iter(parts), timeout=10)
    assert response.status_code == 200
    assert echo_upstream.last.body == b"".join(parts)
    assert echo_upstream.last.header("Transfer-Encoding") == "chunked"


def test_headers_sent_upstream(gateway, echo_upstream: EchoUpstream) -> None:
    response = requests.get(
        gateway.url + "/api/v1/echo/h",
        headers={
            "X-Request-ID": "client-id.1",
            "X-Forwarded-For": "203.0.113.9",
            "X-Consumer-ID": "spoofed",
            "X-Consumer-Name": "spoofed",
            "X-Gateway-Fallback": "spoofed",
            "X-Service-Key": "spoofed",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "must go",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "X-Custom": "kept",
            "Accept-Language": "fr",
            "Authorization": "Bearer end-to-end",
        },
        timeout=5,
    )
    assert response.status_code == 200
    seen = echo_upstream.last
    assert seen.header("Host") == echo_upstream.url.removeprefix("http://")
    assert seen.header("X-Request-ID") == "client-id.1"
    # The client is not a trusted proxy: its X-Forwarded-For is dropped, the peer alone is sent.
    assert seen.header("X-Forwarded-For") == "127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Host") == gateway.url.removeprefix("http://")
    assert seen.header("X-Service-Key") == "service-secret"
    assert seen.header("X-Custom") == "kept"
    assert seen.header("Accept-Language") == "fr"
    assert seen.header("Authorization") == "Bearer end-to-end"
    for gone in ("x-consumer-id", "x-consumer-name", "x-gateway-fallback", "x-hop", "keep-alive", "te"):
        assert gone not in seen.header_names()
    assert "proxy-authorization" not in seen.header_names()
    assert response.headers["X-Request-ID"] == "client-id.1"


def test_an_invalid_request_id_is_replaced_and_sent_upstream(gateway, echo_upstream: EchoUpstream) -> None:
    response = requests.get(gateway.url + "/api/v1/echo/h", headers={"X-Request-ID": "bad id!"}, timeout=5)
    generated = response.headers["X-Request-ID"]
    assert generated != "bad id!"
    assert echo_upstream.last.header("X-Request-ID") == generated


def test_no_header_the_client_did_not_send_is_invented(gateway, echo_upstream: EchoUpstream) -> None:
    raw_request(gateway.url, b"GET /api/v1/echo/bare HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    names = echo_upstream.last.header_names()
    assert "user-agent" not in names
    assert "accept-encoding" not in names


def test_a_key_caller_is_named_to_the_upstream_and_the_key_is_not(gateway_server, echo_upstream) -> None:
    make_service("echo", echo_upstream.url)
    shop = make_app("shop", entries=[{"path": "/api/v1/echo/*"}])
    _, plaintext = make_key(shop)
    gw = gateway_server(workers=1)
    response = requests.get(gw.url + "/api/v1/echo/orders", headers={"X-API-Key": plaintext}, timeout=10)
    assert response.status_code == 200
    seen = echo_upstream.last
    assert seen.header("X-Consumer-ID") == str(shop.id)
    assert seen.header("X-Consumer-Name") == "shop"
    assert "x-api-key" not in seen.header_names()
    assert plaintext not in json.dumps(seen.headers)


# --- Prefixes and versions ------------------------------------------------------------------


def test_upstream_prefix_rewrites_and_version_url_paths_are_prepended(gateway_server, echo_upstream) -> None:
    make_service("strip", echo_upstream.url, upstream_prefix="")
    make_service("swap", echo_upstream.url + "/base/", route_prefix="/api/v1/v/swap", upstream_prefix="/internal")
    make_service("root", echo_upstream.url + "/root", route_prefix="/api/v1")
    make_public_app()
    gw = gateway_server(workers=1)

    def target_of(path: str) -> str:
        assert requests.get(gw.url + path, timeout=5).status_code == 200
        return echo_upstream.last.target

    assert target_of("/api/v1/strip/a/b?c=d") == "/a/b?c=d"
    assert target_of("/api/v1/strip") == "/"
    assert target_of("/api/v1/v/swap/x") == "/base/internal/x"
    assert target_of("/api/v1/other/thing") == "/root/api/v1/other/thing"
    assert target_of("/api/v1") == "/root/api/v1"


def test_versions_pinning_and_the_served_version_header(gateway_server) -> None:
    ups = {name: EchoUpstream() for name in ("default", "v1", "v2", "v3")}
    try:
        make_service(
            "multi",
            ups["default"].url,
            versions=[("v1", ups["v1"].url, 1000), ("v2", ups["v2"].url, 0), ("v3", ups["v3"].url, 0)],
        )
        make_service("nover", ups["default"].url, versions=[("v1", ups["v1"].url, 0)], current_version="v1")
        make_service("plain", ups["default"].url)
        make_public_app()
        gw = gateway_server(workers=1)

        def get(path: str, pin: str | None = None) -> requests.Response:
            headers = {"X-Service-Version": pin} if pin else {}
            return requests.get(gw.url + path, headers=headers, timeout=5)

        unpinned = get("/api/v1/multi/x")
        assert unpinned.headers["X-Service-Version"] == "v1"
        assert len(ups["v1"].received) == 1
        pinned = get("/api/v1/multi/x", "v2")
        assert pinned.headers["X-Service-Version"] == "v2"
        assert len(ups["v2"].received) == 1
        assert get("/api/v1/multi/x", "default").headers["X-Service-Version"] == "default"
        missing = get("/api/v1/multi/x", "v9")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "version_not_found"
        assert get("/api/v1/nover/x").headers["X-Service-Version"] == "v1"  # current_version
        assert get("/api/v1/plain/x").headers["X-Service-Version"] == "default"
        assert len(ups["v3"].received) == 0
    finally:
        for upstream in ups.values():
            upstream.close()


def test_weighted_versions_split_traffic(gateway_server) -> None:
    a, b = EchoUpstream(), EchoUpstream()
    try:
        make_service("split", a.url, versions=[("va", a.url, 300), ("vb", b.url, 100)])
        make_public_app()
        gw = gateway_server(workers=1)
        with requests.Session() as client:
            served = [client.get(gw.url + "/api/v1/split/", timeout=5).headers["X-Service-Version"] for _ in range(200)]
        assert 110 < served.count("va") < 190
        assert len(a.received) + len(b.received) == 200
    finally:
        a.close()
        b.close()


def test_the_caller_only_gets_versions_its_application_allows(gateway_server) -> None:
    a, b = EchoUpstream(), EchoUpstream()
    try:
        make_service("limited", a.url, versions=[("v1", a.url, 900), ("v2", b.url, 100)])
        make_app("beta", allowed_versions=["v2"], entries=[{"path": "/api/v1/limited/*", "is_public": True}])
        gw = gateway_server(workers=1)
        with requests.Session() as client:
            served = {
                client.get(gw.url + "/api/v1/limited/x", timeout=5).headers["X-Service-Version"] for _ in range(30)
            }
        assert served == {"v2"}
        assert len(a.received) == 0
    finally:
        a.close()
        b.close()


# --- What comes back ------------------------------------------------------------------------


def test_gzip_bodies_pass_through_undecoded(gateway, echo_upstream: EchoUpstream) -> None:
    compressed = gzip.compress(b'{"big": "' + b"z" * 50_000 + b'"}')
    echo_upstream.set_handler(
        answer(200, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")], compressed)
    )
    response = requests.get(
        gateway.url + "/api/v1/echo/gz", headers={"Accept-Encoding": "gzip"}, stream=True, timeout=5
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Length"] == str(len(compressed))
    assert response.raw.read(decode_content=False) == compressed
    assert echo_upstream.last.header("Accept-Encoding") == "gzip"


def test_redirects_are_returned_not_followed(gateway, echo_upstream: EchoUpstream) -> None:
    echo_upstream.set_handler(answer(302, [("Location", "/api/v1/echo/elsewhere")], b"moved"))
    response = requests.get(gateway.url + "/api/v1/echo/old", allow_redirects=False, timeout=5)
    assert response.status_code == 302
    assert response.headers["Location"] == "/api/v1/echo/elsewhere"
    assert response.content == b"moved"
    assert [r.target for r in echo_upstream.received] == ["/api/v1/echo/old"]


def test_every_set_cookie_is_kept_and_none_is_replayed_to_another_client(gateway, echo_upstream) -> None:
    cookies = ["sid=abc; Path=/; HttpOnly", "theme=dark; Max-Age=60", "sid=other; Path=/admin"]
    echo_upstream.set_handler(answer(200, [("Set-Cookie", c) for c in cookies], b"ok"))
    raw = raw_request(gateway.url, b"GET /api/v1/echo/login HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert [line.split(": ", 1)[1] for line in head.split("\r\n") if line.lower().startswith("set-cookie:")] == cookies
    echo_upstream.set_handler(answer(200, [], b"second"))
    requests.get(gateway.url + "/api/v1/echo/other-client", timeout=5)
    assert echo_upstream.last.header("Cookie") is None


def test_status_reason_and_end_to_end_response_headers_come_back(gateway, echo_upstream) -> None:
    echo_upstream.set_handler(
        answer(
            418,
            [
                ("X-Upstream", "yes"),
                ("Cache-Control", "no-store"),
                ("Connection", "X-Hop-Back"),
                ("X-Hop-Back", "no"),
                ("Keep-Alive", "timeout=1"),
                ("X-API-Key", "leak"),
                ("Link", "</a>; rel=a"),
                ("Link", "</b>; rel=b"),
            ],
            b"teapot",
        )
    )
    response = requests.get(gateway.url + "/api/v1/echo/tea", timeout=5)
    assert response.status_code == 418
    assert response.content == b"teapot"
    assert response.headers["X-Upstream"] == "yes"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Link"] == "</a>; rel=a, </b>; rel=b"
    for gone in ("X-Hop-Back", "Keep-Alive", "X-API-Key"):
        assert gone not in response.headers
    assert "Content-Type" not in response.headers  # the upstream sent none


def test_upstream_5xx_is_passed_back_as_is(gateway, echo_upstream: EchoUpstream) -> None:
    echo_upstream.set_handler(answer(503, [("Content-Type", "text/plain")], b"upstream says busy"))
    response = requests.get(gateway.url + "/api/v1/echo/busy", timeout=5)
    assert (response.status_code, response.text) == (503, "upstream says busy")
    assert "X-Gateway-Fallback" not in response.headers


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_carry_no_body(gateway, echo_upstream: EchoUpstream, status: int) -> None:
    echo_upstream.set_handler(answer(status, [("ETag", '"v1"')]))
    raw = raw_request(gateway.url, b"GET /api/v1/echo/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode())
    assert b'ETag: "v1"' in head
    assert body == b""


def test_head_carries_no_body_but_keeps_the_length(gateway, echo_upstream: EchoUpstream) -> None:
    echo_upstream.set_handler(answer(200, [("Content-Length", "1234"), ("Content-Type", "text/plain")]))
    raw = raw_request(gateway.url, b"HEAD /api/v1/echo/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Length: 1234" in head
    assert body == b""
    assert echo_upstream.last.method == "HEAD"


def test_unsafe_paths_are_refused_and_never_forwarded(gateway, echo_upstream: EchoUpstream) -> None:
    for target in ("/api/v1/echo/../admin", "/api/v1/echo/%2e%2E/admin", "/api/v1/echo/a%2F..%2Fb", "/api/v1/echo/%5c"):
        raw = raw_request(gateway.url, f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), target
        assert json.loads(body)["error"]["code"] == "bad_path"
    assert echo_upstream.received == []


def test_unknown_routes_get_the_spec_json(gateway) -> None:
    response = requests.get(gateway.url + "/api/v1/nothing-here", timeout=5)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "route_not_found"
    assert error["request_id"] == response.headers["X-Request-ID"]
