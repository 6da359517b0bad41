"""A TCP relay between a product process and a real server, that can misbehave on demand.

Modes (``Relay.mode``):

- ``up``: forward both ways.
- ``down``: existing connections are reset and new ones refused (the port is closed),
  as when the server process is gone.
- ``blackhole``: connections are accepted, and nothing is forwarded either way, on
  existing and new connections alike: a host that stopped answering.
- ``orphan``: existing connections go silent (kept open, nothing forwarded), new
  ones work: a failover behind a virtual IP, where the old connections lead nowhere.

Data that arrives while a connection is silent is read and dropped, so the sender's
TCP sees it acknowledged and no kernel timeout ends the wait: only the product's own
timeouts can.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

MODES = ("up", "down", "blackhole", "orphan")


@dataclass(eq=False)
class _Pair:
    client: socket.socket
    server: socket.socket | None
    silent: bool = False
    closed: bool = False

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.server):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            with contextlib.suppress(OSError):
                sock.close()


@dataclass(eq=False)
class Relay:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``; switch with ``set_mode``."""

    target_host: str
    target_port: int
    port: int = 0
    mode: str = "up"
    connections_made: int = 0
    _pairs: list[_Pair] = field(default_factory=list)
    _listener: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Relay:
        self._listen()
        threading.Thread(target=self._accept_loop, name="relay-accept", daemon=True).start()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        """Switch to ``mode`` (see the module docstring)."""
        if mode not in MODES:
            raise ValueError(mode)
        with self._lock:
            self.mode = mode
            pairs = list(self._pairs)
        if mode == "down":
            self._close_listener()
            for pair in pairs:
                pair.close()
        elif mode in ("blackhole", "orphan"):
            for pair in pairs:
                pair.silent = True
        if mode != "down" and self._listener is None:
            self._listen()

    def open_connections(self) -> int:
        """Return how many relayed connections are open now."""
        with self._lock:
            self._pairs = [p for p in self._pairs if not p.closed]
            return len(self._pairs)

    def stop(self) -> None:
        self._stopped.set()
        self._close_listener()
        with self._lock:
            pairs, self._pairs = list(self._pairs), []
        for pair in pairs:
            pair.close()

    # --- internals -------------------------------------------------------------------------

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(50):
            try:
                sock.bind(("127.0.0.1", self.port))
                break
            except OSError:  # the old listener's port is still being released
                time.sleep(0.1)
        else:
            raise RuntimeError(f"relay cannot listen on port {self.port} again")
        sock.listen(128)
        sock.settimeout(0.2)
        self.port = sock.getsockname()[1]
        self._listener = sock

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            client.setblocking(True)
            with self._lock:
                mode = self.mode
            if mode == "down":
                client.close()
                continue
            server = None
            if mode != "blackhole":
                try:
                    server = socket.create_connection((self.target_host, self.target_port), timeout=5)
                except OSError:
                    client.close()
                    continue
            pair = _Pair(client, server, silent=mode == "blackhole")
            with self._lock:
                self._pairs.append(pair)
                self.connections_made += 1
            threading.Thread(target=self._pump, args=(pair,), name="relay-pump", daemon=True).start()

    def _pump(self, pair: _Pair) -> None:
        selector = selectors.DefaultSelector()
        selector.register(pair.client, selectors.EVENT_READ, pair.server)
        if pair.server is not None:
            selector.register(pair.server, selectors.EVENT_READ, pair.client)
        try:
            while not pair.closed and not self._stopped.is_set():
                for key, _ in selector.select(timeout=0.2):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]  # sockets only
                    if not data:
                        if not pair.silent:  # a silent connection never tells the other side anything
                            pair.close()
                        else:
                            selector.unregister(key.fileobj)
                        break
                    if not pair.silent and key.data is not None:
                        key.data.sendall(data)
        except OSError:
            pair.close()
        finally:
            selector.close()
