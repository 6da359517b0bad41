"""The stack ceiling (bench only): the cheapest forward gunicorn + gevent allow, with no checks at all.

A bare WSGI callable that relays the request (method, path, query, the client's
headers but hop-by-hop ones) to ``BENCH_UPSTREAM`` on kept-alive sockets, one per
concurrent request, and returns the answer. No Django, no routing, no access control,
no access log, no metrics: whatever the gateway spends beyond this is its own work.
It assumes a well-behaved upstream that answers with ``Content-Length`` (bench only).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

_UPSTREAM = urlsplit(os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8000"))
_ADDRESS = (_UPSTREAM.hostname or "127.0.0.1", _UPSTREAM.port or 80)
_HOST = _UPSTREAM.netloc.encode()
_HOP_BY_HOP = {"HTTP_CONNECTION", "HTTP_KEEP_ALIVE", "HTTP_TE", "HTTP_TRAILER", "HTTP_UPGRADE", "HTTP_HOST"}
_idle: list[tuple[socket.socket, object]] = []  # kept-alive upstream sockets with their reader


def _lease() -> tuple[socket.socket, object]:
    if _idle:
        return _idle.pop()
    sock = socket.create_connection(_ADDRESS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, sock.makefile("rb")


def application(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
    """Relay one request to the upstream and its answer back."""
    target = str(environ.get("PATH_INFO", "/"))
    if environ.get("QUERY_STRING"):
        target += f"?{environ['QUERY_STRING']}"
    lines = [f"{environ['REQUEST_METHOD']} {target} HTTP/1.1".encode(), b"Host: " + _HOST]
    for name, value in environ.items():
        if name.startswith("HTTP_") and name not in _HOP_BY_HOP:
            lines.append(f"{name[5:].replace('_', '-')}: {value}".encode("latin-1"))
    length = int(str(environ.get("CONTENT_LENGTH") or 0))
    if length:
        lines.append(b"Content-Length: %d" % length)
    body = environ["wsgi.input"].read(length) if length else b""  # type: ignore[attr-defined]  # a WSGI stream
    head = b"\r\n".join(lines) + b"\r\n\r\n" + body
    sock, reader = _lease()
    sock.sendall(head)
    status_line = reader.readline()  # type: ignore[attr-defined]  # the socket's file
    if not status_line:  # a kept-alive socket the upstream had closed: once more on a new one, as the gateway does
        sock.close()
        while _idle:  # idle as long as this one: closed by the upstream's keep-alive timeout too
            _idle.pop()[0].close()
        sock, reader = _lease()
        sock.sendall(head)
        status_line = reader.readline()  # type: ignore[attr-defined]
    headers: list[tuple[str, str]] = []
    size = 0
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):  # type: ignore[attr-defined]
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            size = int(value)
        elif name.lower() not in ("connection", "keep-alive", "transfer-encoding", "date", "server"):
            headers.append((name, value.strip()))
    answer = reader.read(size) if size else b""  # type: ignore[attr-defined]
    _idle.append((sock, reader))
    start_response(status_line.decode("latin-1").split(" ", 1)[1].strip(), [*headers, ("Content-Length", str(size))])
    return [answer]
