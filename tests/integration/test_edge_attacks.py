"""A hostile client against a real gunicorn gateway and real upstreams on loopback (SPEC §4.2-§4.8).

Each test is one attack of the edge-hardening list, sent with raw sockets where a
polite client library cannot send the bytes, and asserts three things: what the client
got, what the upstream received, and that the breaker did not open for everyone else
(the gateways here open it after 2 failures, so 3 attacks would trip it).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.support.builders import make_app, make_entry, make_key, make_public_app, make_service
from tests.support.raw_upstream import Exchange, RawUpstream, answer_ok, read_head, swallow
from tests.support.upstream import EchoUpstream

pytestmark = pytest.mark.django_db(transaction=True)

BREAKER = {"GATEWAY_BREAKER_FAILURES": "2", "GATEWAY_BREAKER_OPEN_S": "30"}


@pytest.fixture
def raw_upstreams() -> Iterator[list[RawUpstream]]:
    started: list[RawUpstream] = []
    yield started
    for upstream in started:
        upstream.close()


def gateway_for(gateway_server, url: str, **env: str):
    """Service ``svc`` at /api/v1/svc -> ``url``, open to everyone; a 1-worker gateway."""
    make_service("svc", url)
    make_public_app()
    return gateway_server(workers=1, env={**BREAKER, **env})


def connect(gateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response (Content-Length framed, as every gateway error is); skip interim 1xx."""
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            assert data, f"connection closed before a response head: {buffer!r}"
            buffer += data
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            continue
        length = int(headers.get("content-length", "0"))
        while len(buffer) < length:
            data = sock.recv(65536)
            assert data, "connection closed inside the body"
            buffer += data
        return status, headers, buffer[:length]


def closed_by_server(sock: socket.socket, within_s: float = 3.0) -> bool:
    """Return True when the server closes the connection within ``within_s`` (no more bytes)."""
    sock.settimeout(within_s)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def until_closed(sock: socket.socket, within_s: float = 5.0) -> bytes:
    """Return every byte the server sends until it closes the connection (fails if it does not)."""
    sock.settimeout(within_s)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


def healthy(gateway) -> requests.Response:
    return requests.get(gateway.url + "/api/v1/svc/probe", timeout=10)


def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# --- 1. Client faults never trip the breaker ------------------------------------------------


def _truncated_upload(gateway) -> tuple[int, bytes]:
    sock = connect(gateway)
    sock.sendall(b"POST /api/v1/svc/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 100 * 1024)
    sock.shutdown(socket.SHUT_WR)  # the client stops sending, as if gone mid-upload
    status, _, body = read_response(sock)
    sock.close()
    return status, body


def test_truncated_uploads_are_400_close_the_upstream_at_once_and_never_open_the_breaker(
    gateway_server, raw_upstreams
) -> None:
    upstream = RawUpstream(lambda sock, exchange: (read_head(sock, exchange), swallow(sock, exchange)))
    raw_upstreams.append(upstream)
    gateway = gateway_for(gateway_server, upstream.url)
    for _ in range(3):
        status, body = _truncated_upload(gateway)
        assert (status, error_code(body)) == (400, "bad_request")
    # Every upstream connection was closed by the gateway within a second of the client's stop.
    assert wait_for(lambda: all(e.closed_at is not None for e in upstream.exchanges), 3)
    assert all(e.closed_at - e.opened_at < 1.5 for e in upstream.exchanges)  # type: ignore[operator]
    assert all(len(e.received) < 1048576 for e in upstream.exchanges)  # it saw an incomplete request
    upstream.script = answer_ok
    assert healthy(gateway).status_code == 200  # 3 > GATEWAY_BREAKER_FAILURES, still closed


@pytest.mark.parametrize(
    "body",
    [
        b"10000\r\n" + b"y" * 1000,  # aborted inside a chunk
        b"zz\r\nhello\r\n0\r\n\r\n",  # a malformed chunk size
        b"5\r\nhelloXX0\r\n\r\n",  # chunk data longer than its size
    ],
    ids=["aborted", "bad-size", "missing-terminator"],
)
def test_broken_chunked_uploads_are_400_never_500_and_never_open_the_breaker(
    gateway_server, raw_upstreams, body: bytes
) -> None:
    upstream = RawUpstream(lambda sock, exchange: (read_head(sock, exchange), swallow(sock, exchange)))
    raw_upstreams.append(upstream)
    gateway = gateway_for(gateway_server, upstream.url)
    for _ in range(3):
        sock = connect(gateway)
        sock.sendall(b"POST /api/v1/svc/up HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        status, headers, answer = read_response(sock)
        assert (status, error_code(answer)) == (400, "bad_request")
        assert headers["connection"] == "close"
        sock.close()
    assert wait_for(lambda: all(e.closed_at is not None for e in upstream.exchanges), 3)
    upstream.script = answer_ok
    assert healthy(gateway).status_code == 200


# --- 2. TRACE / CONNECT, 12. WebSocket upgrades -----------------------------------------------


@pytest.mark.parametrize(
    ("request_line", "extra", "status", "code"),
    [
        (b"TRACE /api/v1/svc/x HTTP/1.1", b"", 405, "method_not_allowed"),
        (b"TRACE /healthz HTTP/1.1", b"", 405, "method_not_allowed"),
        (
            b"GET /api/v1/svc/ws HTTP/1.1",
            b"Connection: Upgrade\r\nUpgrade: websocket\r\n",
            501,
            "upgrade_not_supported",
        ),
    ],
    ids=["trace-api", "trace-ops", "websocket"],
)
def test_trace_and_websocket_upgrades_never_reach_the_upstream(
    gateway_server, echo_upstream: EchoUpstream, request_line: bytes, extra: bytes, status: int, code: str
) -> None:
    gateway = gateway_for(gateway_server, echo_upstream.url, GATEWAY_SERVICE_KEY_SVC="service-secret")
    sock = connect(gateway)
    sock.sendall(request_line + b"\r\nHost: gw\r\nCookie: sid=1\r\n" + extra + b"\r\n")
    got, _, body = read_response(sock)
    sock.close()
    assert (got, error_code(body)) == (status, code)
    assert b"service-secret" not in body
    assert echo_upstream.received == []


# --- 3. Identity headers from an untrusted client ---------------------------------------------


def test_proxy_identity_headers_from_an_untrusted_client_never_reach_the_upstream(
    gateway_server, echo_upstream: EchoUpstream
) -> None:
    gateway = gateway_for(gateway_server, echo_upstream.url)
    spoofed = {
        "Forwarded": "for=1.2.3.4;proto=https",
        "X-Real-IP": "1.2.3.4",
        "X-Client-IP": "1.2.3.4",
        "True-Client-IP": "1.2.3.4",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Prefix": "/admin",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X-Original-URL": "/admin/secret",
        "X-Rewrite-URL": "/admin/secret",
        "X-Authenticated-User": "root",
        "X-Authenticated-Scope": "admin",
    }
    response = requests.get(gateway.url + "/api/v1/svc/me", headers=spoofed, timeout=10)
    assert response.status_code == 200
    seen = echo_upstream.last
    for name in ("forwarded", "x-real-ip", "x-client-ip", "true-client-ip", "x-forwarded-port"):
        assert name not in seen.header_names(), name
    for name in ("x-forwarded-prefix", "x-original-url", "x-rewrite-url", "x-authenticated-user"):
        assert name not in seen.header_names(), name
    assert "x-authenticated-scope" not in seen.header_names()
    # From loopback too, X-Forwarded-Proto is the socket's (gunicorn trusts no peer by default here).
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Host") == f"127.0.0.1:{gateway.port}"
    assert seen.header("X-Forwarded-For") == "127.0.0.1"


def test_a_trusted_proxy_keeps_its_forwarded_headers(gateway_server, echo_upstream: EchoUpstream) -> None:
    gateway = gateway_for(gateway_server, echo_upstream.url, GATEWAY_TRUSTED_PROXIES="127.0.0.0/8")
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Real-IP": "203.0.113.9"}
    assert requests.get(gateway.url + "/api/v1/svc/me", headers=headers, timeout=10).status_code == 200
    seen = echo_upstream.last
    assert seen.header("X-Forwarded-For") == "203.0.113.9, 127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "https"
    assert seen.header("X-Real-IP") == "203.0.113.9"


# --- 4. Host, 9. JSON 404 -------------------------------------------------------------------


def test_a_host_outside_allowed_hosts_is_refused_on_every_path_but_the_probes(
    gateway_server, echo_upstream: EchoUpstream
) -> None:
    gateway = gateway_for(gateway_server, echo_upstream.url, ALLOWED_HOSTS="gw.example.com")
    for path in ("/api/v1/svc/reset-password", "/metrics", "/admin/services", "/elsewhere", "/api/v1/tasks/x"):
        response = requests.get(gateway.url + path, headers={"Host": "evil.example"}, timeout=10)
        assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_host"), path
    assert echo_upstream.received == []
    for probe in ("/healthz", "/readyz"):
        assert requests.get(gateway.url + probe, headers={"Host": "10.1.2.3:4200"}, timeout=10).status_code in (
            200,
            503,
        )
    good = {"Host": "gw.example.com"}
    assert requests.get(gateway.url + "/api/v1/svc/x", headers=good, timeout=10).status_code == 200
    assert echo_upstream.last.header("X-Forwarded-Host") == "gw.example.com"
    # 9: a path outside /api/v1 answers the JSON 404, not Django's HTML page.
    missing = requests.get(gateway.url + "/wp-login.php", headers=good, timeout=10)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "application/json"
    assert missing.json()["error"]["code"] == "route_not_found"


# --- 5. Early upstream answers --------------------------------------------------------------


def early_413(sock: socket.socket, exchange: Exchange) -> None:
    """Answer 413 as soon as the head is in, then close with the body unread."""
    head = read_head(sock, exchange)
    if b"/probe" in head:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return
    sock.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
    sock.close()


def test_an_early_upstream_answer_is_relayed_and_is_not_a_failure(gateway_server, raw_upstreams) -> None:
    upstream = RawUpstream(early_413)
    raw_upstreams.append(upstream)
    gateway = gateway_for(gateway_server, upstream.url)
    for _ in range(3):
        sock = connect(gateway)
        sock.sendall(b"POST /api/v1/svc/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 8388608\r\n\r\n")
        try:
            for _ in range(128):  # 8 MiB, while the upstream already answered and left
                sock.sendall(b"z" * 65536)
        except OSError:
            pass  # the gateway closed the connection after relaying the answer
        status, _, body = read_response(sock)
        sock.close()
        assert (status, body) == (413, b"too big!")
    assert healthy(gateway).status_code == 200  # not circuit_open


# --- 6. Invalid upstream bytes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\nx".encode("latin-1"),
        b"HTTP/1.1 2\xb2\xb2 OK\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nX-Bad\rInjected: 1\r\nContent-Length: 1\r\n\r\nx",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["superscript-length", "superscript-status", "bare-cr", "garbage"],
)
def test_an_invalid_upstream_answer_is_502_never_500_and_not_a_breaker_failure(
    gateway_server, raw_upstreams, answer: bytes
) -> None:
    def script(sock: socket.socket, exchange: Exchange) -> None:
        head = read_head(sock, exchange)
        if b"/probe" in head:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        else:
            sock.sendall(answer)

    upstream = RawUpstream(script)
    raw_upstreams.append(upstream)
    gateway = gateway_for(gateway_server, upstream.url)
    for _ in range(3):
        response = requests.get(gateway.url + "/api/v1/svc/x", timeout=10)
        assert (response.status_code, response.json()["error"]["code"]) == (502, "upstream_unavailable")
    assert healthy(gateway).status_code == 200
    assert wait_for(lambda: all(e.closed_at is not None for e in upstream.exchanges[:3]), 3)  # leases closed


# --- 7. One version rule ------------------------------------------------------------------------


def test_an_unpinned_call_on_another_applications_public_entry_uses_the_callers_versions(
    gateway_server, echo_upstream: EchoUpstream
) -> None:
    v2 = EchoUpstream()
    try:
        make_service("svc", echo_upstream.url, versions=[("v1", echo_upstream.url, 50), ("v2", v2.url, 50)])
        owner = make_app("owner")
        make_entry(owner, "/api/v1/svc/*", is_public=True)
        caller = make_app("caller", allowed_versions=["v1"])
        _, key = make_key(caller)
        gateway = gateway_server(workers=1)
        served = []
        for _ in range(40):
            response = requests.get(gateway.url + "/api/v1/svc/x", headers={"X-API-Key": key}, timeout=10)
            assert response.status_code == 200, response.text
            served.append(response.headers["X-Service-Version"])
        assert set(served) == {"v1"}
        assert v2.received == []
    finally:
        v2.close()


# --- 8. The guessing budget is per client and prefix ------------------------------------------


def test_a_guesser_does_not_lock_out_another_prefix_from_the_same_address(
    gateway_server, echo_upstream: EchoUpstream
) -> None:
    make_service("svc", echo_upstream.url)
    a = make_app("a", entries=[{"path": "/api/v1/svc/*"}])
    b = make_app("b", entries=[{"path": "/api/v1/svc/*"}])
    key_a, _ = make_key(a)
    _, plaintext_b = make_key(b)
    gateway = gateway_server(workers=1)
    for attempt in range(11):
        wrong = f"{key_a.key_prefix}.wrong-secret-{attempt}"
        response = requests.get(gateway.url + "/api/v1/svc/x", headers={"X-API-Key": wrong}, timeout=30)
        assert response.status_code == 401
    assert "Retry-After" in response.headers  # the 11th was refused unhashed: A's prefix is locked
    response = requests.get(gateway.url + "/api/v1/svc/x", headers={"X-API-Key": plaintext_b}, timeout=30)
    assert response.status_code == 200, response.text


# --- 10. Redirects stay on the gateway ----------------------------------------------------------


def test_a_location_pointing_at_the_upstream_is_rewritten_to_the_gateway(gateway_server, raw_upstreams) -> None:
    upstreams: list[RawUpstream] = []

    def redirecting(sock: socket.socket, exchange: Exchange) -> None:
        while head := read_head(sock, exchange):  # one answer per request on a kept-alive connection
            exchange.received.clear()
            own = upstreams[0].url
            away = b"/away" in head
            target = b"http://elsewhere.example/x" if away else f"{own}/api/v1/svc/index.html?a=1".encode()
            sock.sendall(
                b"HTTP/1.1 302 Found\r\nLocation: "
                + target
                + b"\r\nContent-Location: "
                + own.encode()
                + b"/api/v1/svc/doc\r\nContent-Length: 0\r\n\r\n"
            )

    upstream = RawUpstream(redirecting)
    upstreams.append(upstream)
    raw_upstreams.append(upstream)
    gateway = gateway_for(gateway_server, upstream.url)
    response = requests.get(
        gateway.url + "/api/v1/svc/", headers={"Host": "gw.example:8443"}, allow_redirects=False, timeout=10
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "http://gw.example:8443/api/v1/svc/index.html?a=1"
    assert response.headers["Content-Location"] == "http://gw.example:8443/api/v1/svc/doc"
    away = requests.get(gateway.url + "/api/v1/svc/away", allow_redirects=False, timeout=10)
    assert away.headers["Location"] == "http://elsewhere.example/x"


# --- 11. Expect: 100-continue -------------------------------------------------------------------


def test_100_continue_comes_only_after_the_checks(gateway_server, echo_upstream: EchoUpstream) -> None:
    make_service("svc", echo_upstream.url)
    app = make_app("keyed", entries=[{"path": "/api/v1/svc/*"}])
    _, key = make_key(app)
    gateway = gateway_server(workers=1, env={"GATEWAY_MAX_BODY_BYTES": "1000"})

    # Refused (no key): a final 401 straight away, no 100, and the connection is closed.
    sock = connect(gateway)
    sock.sendall(b"POST /api/v1/svc/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    everything = until_closed(sock)
    assert everything.startswith(b"HTTP/1.1 401"), everything  # no 100 Continue before it
    assert b"Connection: close" in everything
    sock.close()

    # Announced oversized: 413 and the connection closed, nothing drained or forwarded.
    sock = connect(gateway)
    sock.sendall(b"POST /api/v1/svc/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    status, headers, _ = read_response(sock)
    assert (status, headers["connection"]) == (413, "close")
    assert closed_by_server(sock)
    sock.close()

    # Allowed: 100 Continue, then the body goes up and the upstream's answer comes back.
    sock = connect(gateway)
    sock.sendall(
        b"POST /api/v1/svc/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nExpect: 100-continue\r\nX-API-Key: "
        + key.encode()
        + b"\r\n\r\n"
    )
    sock.settimeout(10)
    interim = sock.recv(65536)
    assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
    sock.sendall(b"hello")
    status, _, _ = read_response(sock)
    sock.close()
    assert status == 200
    assert echo_upstream.last.body == b"hello"
    assert echo_upstream.received == [echo_upstream.last]  # the refused ones never reached it
