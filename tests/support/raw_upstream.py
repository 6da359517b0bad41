"""A raw TCP upstream for attack tests: sees exactly the bytes the gateway sends, answers what a script says.

``http.server`` would parse (and wait for) a whole request; an attack test needs to see
an incomplete one, know when the gateway closed it, and answer before the body ends.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Exchange:
    """One connection as the upstream saw it."""

    received: bytearray = field(default_factory=bytearray)
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None  # when the gateway closed its side (EOF or reset)

    @property
    def head(self) -> bytes:
        return bytes(self.received).split(b"\r\n\r\n", 1)[0]


Script = Callable[[socket.socket, Exchange], None]


def read_head(sock: socket.socket, exchange: Exchange) -> bytes:
    """Read until the end of the request head; return it."""
    while b"\r\n\r\n" not in exchange.received:
        data = sock.recv(65536)
        if not data:
            break
        exchange.received += data
    return exchange.head


def drain(sock: socket.socket, exchange: Exchange) -> None:
    """Read everything until the gateway closes the connection."""
    try:
        while data := sock.recv(65536):
            exchange.received += data
    except OSError:
        pass


def swallow(sock: socket.socket, exchange: Exchange) -> None:
    """Read the request and never answer: the gateway must close it itself."""
    drain(sock, exchange)


def answer_ok(sock: socket.socket, exchange: Exchange) -> None:
    """Read one head (and a Content-Length body), answer 200 "ok", keep reading for more."""
    while True:
        head = read_head(sock, exchange)
        if not head:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        body_start = bytes(exchange.received).index(b"\r\n\r\n") + 4
        while len(exchange.received) - body_start < length:
            data = sock.recv(65536)
            if not data:
                return
            exchange.received += data
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        exchange.received.clear()


class RawUpstream:
    """A loopback TCP server running ``script(sock, exchange)`` for every connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.exchanges: list[Exchange] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            exchange = Exchange()
            self.exchanges.append(exchange)
            threading.Thread(target=self._run, args=(sock, exchange), daemon=True).start()

    def _run(self, sock: socket.socket, exchange: Exchange) -> None:
        sock.settimeout(30)
        try:
            self.script(sock, exchange)
            drain(sock, exchange)
        except OSError:
            pass
        finally:
            exchange.closed_at = time.monotonic()
            sock.close()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
