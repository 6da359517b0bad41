"""An echo upstream for integration tests: records what it received, answers with it.

Like Werkzeug's proxy test fixture, it reports exactly what reached it, so tests
assert on what the upstream saw, not only on the status code. A test can replace
``handler`` to script any answer (status, headers, body, delays, streaming).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    """One request as the upstream saw it: raw request target, headers in order, body."""

    method: str
    target: str  # raw path + query, byte for byte as sent on the request line
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or None."""
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    def header_names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


Handler = Callable[["EchoRequestHandler", Received], None]


def echo(handler: EchoRequestHandler, received: Received) -> None:
    """Default answer: 200 JSON describing the received request."""
    body = json.dumps(
        {
            "method": received.method,
            "target": received.target,
            "headers": received.headers,
            "body": received.body.decode("latin-1"),
        }
    ).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if received.method != "HEAD":
        handler.wfile.write(body)


class EchoRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EchoServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        body = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        elif self.headers.get("Content-Length"):
            body = self.rfile.read(int(self.headers["Content-Length"]))
        received = Received(self.command, self.path, list(self.headers.items()), body)
        self.server.received.append(received)
        self.server.handler(self, received)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoRequestHandler)
        self.received: list[Received] = []
        self.handler: Handler = echo


@dataclass
class EchoUpstream:
    """A running echo server on loopback; ``url`` is its base URL."""

    server: EchoServer = field(default_factory=EchoServer)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def received(self) -> list[Received]:
        return self.server.received

    @property
    def last(self) -> Received:
        return self.server.received[-1]

    def set_handler(self, handler: Handler) -> None:
        self.server.handler = handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    """Return an http URL on loopback where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"
