"""A demo upstream: answers every request with JSON naming itself and what it received.

Run as ``python -m demo.upstream --name pipeline --port 7202``. The gateway's routing
can be seen at work by reading which service answered, the path it was given and the
headers it got. The ``auth`` service also signs the demo user in (``demo.auth``):
``POST /api/auth/login`` answers an RS256 access token, ``/.well-known/jwks.json`` its key.
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

MAX_ECHO_BYTES = 64 * 1024  # the demo reports at most this much of a request body


class DemoHandler(BaseHTTPRequestHandler):
    """Answer any method with ``{"service", "method", "path", "query", "headers", "body"}``."""

    protocol_version = "HTTP/1.1"
    service_name: ClassVar[str] = "demo"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        if self.service_name == "auth" and self._sign_in(path, body):
            return
        payload = {
            "service": self.service_name,
            "method": self.command,
            "path": path,
            "query": query,
            "headers": dict(self.headers.items()),
            "body": body[:MAX_ECHO_BYTES].decode("utf-8", errors="replace"),
        }
        data = json.dumps(payload, indent=2).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _sign_in(self, path: str, body: bytes) -> bool:
        """Answer the demo Auth API's login and JWKS paths; False for any other request."""
        from demo import auth

        if self.command == "POST" and path == "/api/auth/login":
            status, answer = auth.login(body)
            self._send_json(status, json.dumps(answer).encode() + b"\n", "no-store")
            return True
        if self.command in ("GET", "HEAD") and path == "/.well-known/jwks.json":
            self._send_json(200, auth.jwks_document(), "public, max-age=300")
            return True
        return False

    def _send_json(self, status: int, data: bytes, cache_control: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", cache_control)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write(f"{self.service_name}: {self.address_string()} {format % args}\n")
        sys.stdout.flush()


def make_server(name: str, host: str, port: int) -> ThreadingHTTPServer:
    """Return a threaded server answering as the demo service ``name``."""
    handler = type(f"{name.title()}Handler", (DemoHandler,), {"service_name": name})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="service name to report, e.g. pipeline")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    args = parser.parse_args(argv)
    server = make_server(args.name, args.host, args.port)
    print(f"demo upstream '{args.name}' on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
