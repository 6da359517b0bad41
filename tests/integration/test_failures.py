"""Upstream failures, fallback, circuit breaker and body limits through a live gateway (SPEC §4.8, §4.9)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.support.builders import make_public_app, make_service
from tests.support.upstream import EchoRequestHandler, EchoUpstream, Received, closed_port_url

pytestmark = pytest.mark.django_db(transaction=True)

FAST_FAILURE_ENV = {
    "GATEWAY_CONNECT_TIMEOUT_MS": "400",
    "GATEWAY_BREAKER_FAILURES": "3",
    "GATEWAY_BREAKER_OPEN_S": "1.5",
}


def slow(delay_s: float):
    def handler(h: EchoRequestHandler, received: Received) -> None:
        time.sleep(delay_s)
        try:
            h.send_response(200)
            h.send_header("Content-Length", "4")
            h.end_headers()
            h.wfile.write(b"slow")
        except OSError:
            pass  # the gateway gave up already

    return handler


@pytest.fixture
def fallback() -> Iterator[EchoUpstream]:
    upstream = EchoUpstream()
    yield upstream
    upstream.close()


@pytest.fixture
def unresponsive_listener() -> Iterator[str]:
    """A loopback port whose accept queue is full: a connect to it times out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(8):  # fill the accept queue and the SYN backlog
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    for filler in fillers:
        filler.close()
    server.close()


def error_code(response: requests.Response) -> str:
    return response.json()["error"]["code"]


def test_connection_refused_is_502_without_fallback(gateway_server) -> None:
    make_service("down", closed_port_url())
    make_public_app()
    gw = gateway_server(workers=1, env=FAST_FAILURE_ENV)
    response = requests.get(gw.url + "/api/v1/down/x", timeout=10)
    assert (response.status_code, error_code(response)) == (502, "upstream_unavailable")
    assert response.json()["error"]["request_id"] == response.headers["X-Request-ID"]


def test_connection_refused_goes_to_the_fallback_for_any_method(gateway_server, fallback) -> None:
    make_service("down", closed_port_url(), fallback_url=fallback.url)
    make_public_app()
    gw = gateway_server(workers=1, env=FAST_FAILURE_ENV)
    response = requests.post(gw.url + "/api/v1/down/orders?x=1", data=b"payload", timeout=10)
    assert response.status_code == 200
    assert response.headers["X-Gateway-Fallback"] == "1"
    assert fallback.last.method == "POST"
    assert fallback.last.target == "/api/v1/down/orders?x=1"
    assert fallback.last.body == b"payload"


def test_connect_timeout_is_504_and_retried_on_the_fallback(gateway_server, fallback, unresponsive_listener) -> None:
    make_service("stuck", unresponsive_listener)
    make_service("stuckfb", unresponsive_listener, fallback_url=fallback.url)
    make_public_app()
    gw = gateway_server(workers=1, env=FAST_FAILURE_ENV)
    started = time.monotonic()
    response = requests.get(gw.url + "/api/v1/stuck/x", timeout=10)
    assert (response.status_code, error_code(response)) == (504, "upstream_timeout")
    assert time.monotonic() - started < 3
    rescued = requests.put(gw.url + "/api/v1/stuckfb/x", data=b"p", timeout=10)
    assert rescued.status_code == 200
    assert rescued.headers["X-Gateway-Fallback"] == "1"


def test_read_timeout_is_504_and_only_idempotent_methods_use_the_fallback(gateway_server, fallback) -> None:
    primary = EchoUpstream()
    primary.set_handler(slow(2.0))
    try:
        make_service("sleepy", primary.url, fallback_url=fallback.url, timeout_ms=300)
        make_service("sleepy-alone", primary.url, timeout_ms=300)
        make_public_app()
        gw = gateway_server(workers=1, env=FAST_FAILURE_ENV)

        alone = requests.get(gw.url + "/api/v1/sleepy-alone/x", timeout=10)
        assert (alone.status_code, error_code(alone)) == (504, "upstream_timeout")

        get = requests.get(gw.url + "/api/v1/sleepy/x", timeout=10)
        assert get.status_code == 200
        assert get.headers["X-Gateway-Fallback"] == "1"
        assert fallback.last.method == "GET"

        post = requests.post(gw.url + "/api/v1/sleepy/x", data=b"once", timeout=10)
        assert (post.status_code, error_code(post)) == (504, "upstream_timeout")
        assert "X-Gateway-Fallback" not in post.headers
        assert [r.method for r in fallback.received] == ["GET"]  # the POST was not repeated
    finally:
        primary.close()


def test_the_breaker_opens_after_consecutive_failures_then_a_trial_closes_it(gateway_server) -> None:
    port_url = closed_port_url()
    make_service("flaky", port_url)
    make_public_app()
    gw = gateway_server(workers=1, env=FAST_FAILURE_ENV)
    with requests.Session() as client:
        codes = [error_code(client.get(gw.url + "/api/v1/flaky/x", timeout=10)) for _ in range(3)]
        assert codes == ["upstream_unavailable"] * 3
        opened = client.get(gw.url + "/api/v1/flaky/x", timeout=10)
        assert (opened.status_code, error_code(opened)) == (503, "circuit_open")

        # The upstream comes back on the same port; after the open period one trial closes the circuit.
        port = int(port_url.rsplit(":", 1)[1])
        revived = EchoUpstream.__new__(EchoUpstream)
        from tests.support.upstream import EchoServer

        class SamePort(EchoServer):
            def __init__(self) -> None:
                super(EchoServer, self).__init__(("127.0.0.1", port), EchoRequestHandler)
                self.received = []
                self.handler = EchoServer().handler

        revived.server = SamePort()
        revived.__post_init__()
        try:
            assert error_code(client.get(gw.url + "/api/v1/flaky/x", timeout=10)) == "circuit_open"
            time.sleep(1.7)
            assert client.get(gw.url + "/api/v1/flaky/x", timeout=10).status_code == 200
            assert client.get(gw.url + "/api/v1/flaky/x", timeout=10).status_code == 200
            assert len(revived.received) == 2
        finally:
            revived.close()


def test_an_open_breaker_sends_straight_to_the_fallback(gateway_server, fallback) -> None:
    make_service("flaky", closed_port_url(), fallback_url=fallback.url)
    make_public_app()
    gw = gateway_server(workers=1, env=FAST_FAILURE_ENV)
    with requests.Session() as client:
        for _ in range(5):
            response = client.get(gw.url + "/api/v1/flaky/x", timeout=10)
            assert response.status_code == 200
            assert response.headers["X-Gateway-Fallback"] == "1"
    assert len(fallback.received) == 5


def test_upstream_5xx_does_not_open_the_breaker(gateway_server, echo_upstream: EchoUpstream) -> None:
    def failing(h: EchoRequestHandler, received: Received) -> None:
        h.send_response(500)
        h.send_header("Content-Length", "0")
        h.end_headers()

    echo_upstream.set_handler(failing)
    make_service("err", echo_upstream.url)
    make_public_app()
    gw = gateway_server(workers=1, env=FAST_FAILURE_ENV)
    with requests.Session() as client:
        statuses = [client.get(gw.url + "/api/v1/err/x", timeout=10).status_code for _ in range(6)]
    assert statuses == [500] * 6
    assert len(echo_upstream.received) == 6


def test_a_declared_oversized_body_is_refused_before_forwarding(gateway_server, echo_upstream) -> None:
    make_service("up", echo_upstream.url)
    make_public_app()
    gw = gateway_server(workers=1, env={"GATEWAY_MAX_BODY_BYTES": "1000"})
    response = requests.post(gw.url + "/api/v1/up/x", data=b"x" * 1001, timeout=10)
    assert (response.status_code, error_code(response)) == (413, "payload_too_large")
    assert requests.post(gw.url + "/api/v1/up/x", data=b"x" * 1000, timeout=10).status_code == 200
    assert [len(r.body) for r in echo_upstream.received] == [1000]


def test_a_chunked_body_is_cut_off_when_it_crosses_the_limit(gateway_server, echo_upstream) -> None:
    make_service("up", echo_upstream.url)
    make_public_app()
    gw = gateway_server(workers=1, env={"GATEWAY_MAX_BODY_BYTES": "100000"})

    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b"y" * 10_000

    response = requests.post(gw.url + "/api/v1/up/x", data=chunks(), timeout=10)
    assert (response.status_code, error_code(response)) == (413, "payload_too_large")
    complete = [r for r in echo_upstream.received if len(r.body) > 100_000]
    assert complete == []  # the upstream never got a complete oversized body
    small = requests.post(gw.url + "/api/v1/up/x", data=iter([b"z" * 5000] * 3), timeout=10)
    assert small.status_code == 200
    assert echo_upstream.last.body == b"z" * 15000


class TlsUpstream:
    """An HTTPS upstream on loopback with a fresh self-signed certificate (``cert``) for 127.0.0.1."""

    def __init__(self, directory) -> None:
        import ssl
        import subprocess
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.cert, key = directory / "cert.pem", directory / "key.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
                *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(self.cert)),
            ],
            check=True,
            capture_output=True,
        )
        reached: list[tuple[str, str, bytes]] = []
        self.reached = reached

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reached.append((self.command, self.path, body))
                payload = b"secure:" + body
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_upstream(tmp_path) -> Iterator[TlsUpstream]:
    upstream = TlsUpstream(tmp_path)
    yield upstream
    upstream.close()


@pytest.fixture
def untrusted_tls_upstream(tls_upstream: TlsUpstream) -> Iterator[str]:
    """An HTTPS upstream whose self-signed certificate the gateway does not trust."""
    yield tls_upstream.url
    assert tls_upstream.reached == []  # the handshake failed: no request ever reached it


def test_an_https_upstream_signed_by_the_configured_ca_is_served(gateway_server, tls_upstream) -> None:
    make_service("tls", tls_upstream.url)
    make_public_app()
    gw = gateway_server(workers=1, env={"GATEWAY_UPSTREAM_CA_BUNDLE": str(tls_upstream.cert)})
    for _ in range(3):  # the second and third reuse the kept TLS connection
        response = requests.get(gw.url + "/api/v1/tls/x?q=1", timeout=10)
        assert (response.status_code, response.content) == (200, b"secure:")
    response = requests.post(gw.url + "/api/v1/tls/y", data=b"payload", timeout=10)
    assert (response.status_code, response.content) == (200, b"secure:payload")
    assert tls_upstream.reached[-1] == ("POST", "/api/v1/tls/y", b"payload")


def test_a_tls_failure_is_502_and_goes_to_the_fallback(gateway_server, fallback, untrusted_tls_upstream) -> None:
    make_service("tls", untrusted_tls_upstream)
    make_service("tlsfb", untrusted_tls_upstream, fallback_url=fallback.url)
    make_public_app()
    gw = gateway_server(workers=1, env=FAST_FAILURE_ENV)
    refused = requests.get(gw.url + "/api/v1/tls/x", timeout=10)
    assert (refused.status_code, error_code(refused)) == (502, "upstream_unavailable")
    rescued = requests.post(gw.url + "/api/v1/tlsfb/x", data=b"p", timeout=10)
    assert rescued.status_code == 200
    assert rescued.headers["X-Gateway-Fallback"] == "1"
    assert fallback.last.method == "POST"


class ScriptedUpstream:
    """A raw HTTP/1.1 server on loopback whose answers are scripted per request, in order.

    Each script entry gets the request head and returns the bytes to send back, a
    ``(bytes, "close")`` pair to close the connection after them, or None to close it
    without answering. Connections are kept open otherwise.
    """

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.connections = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                answer = self.script.pop(0)(head) if self.script else None
                if answer is None:
                    return
                if isinstance(answer, tuple):  # (bytes, "close"): send, then close the connection
                    conn.sendall(answer[0])
                    return
                conn.sendall(answer)

    def close(self) -> None:
        self.server.close()


def ok(body: bytes = b"ok"):
    return lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


@pytest.fixture
def scripted() -> Iterator:
    upstreams: list[ScriptedUpstream] = []

    def start(*script) -> ScriptedUpstream:
        upstream = ScriptedUpstream(list(script))
        upstreams.append(upstream)
        return upstream

    yield start
    for upstream in upstreams:
        upstream.close()


def test_a_kept_alive_connection_closed_by_the_upstream_is_retried_for_a_get(gateway_server, scripted) -> None:
    upstream = scripted(ok(b"first"), lambda head: None, ok(b"second"))
    make_service("flaky", upstream.url)
    make_public_app()
    gw = gateway_server(workers=1)
    assert requests.get(gw.url + "/api/v1/flaky/a", timeout=10).content == b"first"
    # The kept connection is closed on the next request without an answer: one retry, on a new connection.
    response = requests.get(gw.url + "/api/v1/flaky/b", timeout=10)
    assert (response.status_code, response.content) == (200, b"second")
    assert upstream.connections == 2


def test_a_post_is_not_retried_when_the_upstream_closes_without_answering(gateway_server, scripted) -> None:
    upstream = scripted(ok(), lambda head: None, ok(b"never"))
    make_service("flaky", upstream.url)
    make_public_app()
    gw = gateway_server(workers=1)
    assert requests.get(gw.url + "/api/v1/flaky/a", timeout=10).status_code == 200
    response = requests.post(gw.url + "/api/v1/flaky/b", data=b"payload", timeout=10)
    assert (response.status_code, error_code(response)) == (502, "upstream_unavailable")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nX-Split: a\nSet-Cookie: injected=1\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nFolded: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    ],
)
def test_an_invalid_answer_is_502(gateway_server, scripted, answer: bytes) -> None:
    upstream = scripted(lambda head: answer)
    make_service("broken", upstream.url)
    make_public_app()
    gw = gateway_server(workers=1)
    response = requests.get(gw.url + "/api/v1/broken/x", timeout=10)
    assert (response.status_code, error_code(response)) == (502, "upstream_unavailable")
    assert "injected" not in response.headers.get("Set-Cookie", "")


def test_a_body_cut_short_drops_the_client_connection(gateway_server, scripted) -> None:
    big = b"x" * 200_000
    upstream = scripted(lambda head: (b"HTTP/1.1 200 OK\r\nContent-Length: 500000\r\n\r\n" + big, "close"))
    make_service("short", upstream.url)
    make_public_app()
    gw = gateway_server(workers=1)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # the body ended early: not passed as whole
        requests.get(gw.url + "/api/v1/short/x", timeout=20).content  # noqa: B018 - reading the body fails
    assert time.monotonic() - started < 10  # dropped at once, not left to a timeout
