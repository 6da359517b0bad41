"""The upstream lease and exchange: a kept-alive connection borrowed for one request, and its errors.

Each gateway process keeps, per upstream origin (``scheme://host:port``), a stack of
idle connections (newest first, at most ``POOL_MAXSIZE``). A request leases one (or
connects, with TLS for https, verified against ``GATEWAY_UPSTREAM_CA_BUNDLE`` or
certifi's bundle), writes the request and reads the answer head with
``routing.http1``, and gives the connection back only when the answer was read to its
end with the connection still usable; every other exit closes it.

Every exception the exchange can raise ends as one of three families:

- ``ClientFault``: the client's side broke (a body shorter than its
  ``Content-Length``, malformed or aborted chunking, a client gone). The upstream
  connection is closed at once (the upstream sees an incomplete request), the breaker
  is not told, the client gets 400 ``bad_request`` (413 for an over-long body).
- ``UpstreamFault``: the upstream could not be used (refused, DNS, TLS, timeouts, a
  connection reset before any answer). The only family the breaker counts;
  ``reached`` says whether the request may have been processed (fallback rules).
- ``InvalidUpstreamAnswer``: the upstream answered, but not in valid HTTP/1.x:
  502 ``upstream_unavailable``, not a breaker failure (the upstream is up; it is a
  bug to fix there, not a reason to stop sending everyone else).

An upstream that answers before it has read the whole request body (an early 413,
401 or 303, then a closed connection) has that answer relayed: it is an answer.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
from collections.abc import Callable
from functools import lru_cache
from typing import Final
from urllib.parse import urlsplit

import certifi

from gateway_core.errors import ErrorCode, GatewayError
from routing.http1 import Answer, BodySource, InvalidAnswer, NoAnswer, read_answer, send_request

# Connections kept per upstream origin and worker: enough for a gevent worker's
# concurrent requests to one upstream without reconnecting under load.
POOL_MAXSIZE: Final = 256
# How long to look for an answer the upstream sent before it stopped reading the body.
EARLY_ANSWER_WAIT_S: Final = 1.0


class ExchangeError(Exception):
    """A failed exchange; ``error`` is what the client is told."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class ClientFault(ExchangeError):
    """The client's request broke mid-exchange; never an upstream failure."""


class UpstreamFault(ExchangeError):
    """The upstream could not be used. ``reached``: the request may have reached it."""

    def __init__(self, error: GatewayError, *, reached: bool) -> None:
        super().__init__(error)
        self.reached = reached


class StaleConnection(UpstreamFault):
    """A kept-alive connection the upstream had closed: it sent nothing back, so nothing was processed."""

    def __init__(self) -> None:
        super().__init__(unavailable(), reached=True)


class InvalidUpstreamAnswer(ExchangeError):
    """The upstream answered with bytes that are not a valid HTTP/1.x answer."""


def bad_request(message: str = "The request body was incomplete or malformed.") -> ClientFault:
    return ClientFault(GatewayError(400, ErrorCode.BAD_REQUEST, message))


def unavailable() -> GatewayError:
    return GatewayError(502, ErrorCode.UPSTREAM_UNAVAILABLE, "The upstream could not be reached.")


def timed_out() -> GatewayError:
    return GatewayError(504, ErrorCode.UPSTREAM_TIMEOUT, "The upstream did not answer in time.")


def invalid_answer() -> InvalidUpstreamAnswer:
    return InvalidUpstreamAnswer(
        GatewayError(502, ErrorCode.UPSTREAM_UNAVAILABLE, "The upstream sent an invalid answer.")
    )


# --- Connections ------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def split_base(url: str) -> tuple[str, str, str]:
    """Return ``(scheme://netloc, path without trailing /, netloc)`` of an upstream base URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/"), parts.netloc


class Pool:
    """The idle kept-alive connections of one origin, newest on top."""

    __slots__ = ("host", "idle", "port", "tls")

    def __init__(self, origin: str) -> None:
        parts = urlsplit(origin)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.idle: list[socket.socket] = []

    def take(self) -> socket.socket | None:
        """Return an idle connection the upstream has not closed meanwhile, or None."""
        idle = self.idle
        while idle:
            sock = idle.pop()
            if still_open(sock):
                return sock
            sock.close()
        return None

    def give(self, sock: socket.socket) -> None:
        if len(self.idle) < POOL_MAXSIZE:
            self.idle.append(sock)
        else:
            sock.close()

    def connect(self, timeout_s: float, ca_bundle: str) -> socket.socket:
        """Open a new connection (TLS for https); raises ``UpstreamFault`` (nothing reached the upstream)."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        except TimeoutError:
            raise UpstreamFault(timed_out(), reached=False) from None
        except OSError:  # refused, unreachable, DNS (gaierror)
            raise UpstreamFault(unavailable(), reached=False) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls:
                sock = tls_context(ca_bundle).wrap_socket(sock, server_hostname=self.host)
        except TimeoutError:
            sock.close()
            raise UpstreamFault(timed_out(), reached=False) from None
        except OSError:  # ssl.SSLError (handshake, certificate) is an OSError
            sock.close()
            raise UpstreamFault(unavailable(), reached=False) from None
        return sock


def still_open(sock: socket.socket) -> bool:
    """Return False when an idle connection became readable: the upstream closed it (or broke framing)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed descriptor
        return False
    return not readable


@lru_cache(maxsize=4)
def tls_context(ca_bundle: str) -> ssl.SSLContext:
    """Certificates are always verified: against ``ca_bundle``, else certifi's bundle."""
    return ssl.create_default_context(cafile=ca_bundle or certifi.where())


_pools: dict[str, Pool] = {}
_pools_pid = 0


def pool_for(origin: str) -> Pool:
    """Return this process's pool for ``origin`` (new ones after a fork: sockets are not shared)."""
    global _pools_pid
    if _pools_pid != os.getpid():
        _pools.clear()
        _pools_pid = os.getpid()
    pool = _pools.get(origin)
    if pool is None:
        pool = _pools[origin] = Pool(origin)
    return pool


class Lease:
    """One connection borrowed for one exchange; ``release`` gives it back or closes it, once."""

    __slots__ = ("pool", "released", "reused", "socket")

    def __init__(self, origin: str, connect_timeout_s: float, read_timeout_s: float, ca_bundle: str) -> None:
        self.pool = pool_for(origin)
        self.released = False
        sock = self.pool.take()
        self.reused = sock is not None
        if sock is None:
            sock = self.pool.connect(connect_timeout_s, ca_bundle)
        sock.settimeout(read_timeout_s)
        self.socket: socket.socket = sock

    def release(self, *, reusable: bool) -> None:
        if self.released:
            return
        self.released = True
        if reusable:
            self.pool.give(self.socket)
        else:
            self.socket.close()  # a half-used connection cannot carry another request

    def close(self) -> None:
        self.release(reusable=False)


# --- The exchange -----------------------------------------------------------------------------


def exchange(
    lease: Lease,
    head: bytes,
    body: BodySource | None,
    *,
    method: str,
    chunked: bool,
    block_bytes: int,
    on_early_answer: Callable[[], None] = lambda: None,
) -> Answer:
    """Send the request on the lease and return the answer's head; the lease is closed on any error.

    Raises ``ClientFault``, ``UpstreamFault`` or ``InvalidUpstreamAnswer`` (or the
    ``GatewayError`` 413 of an over-long body, with the lease closed). When the upstream
    stops reading the body but has answered, the answer is returned and
    ``on_early_answer`` runs (the client's unread body means its connection must close).
    """
    try:
        try:
            send_request(lease.socket, head, body, chunked=chunked, block_bytes=block_bytes)
        except (ClientFault, GatewayError):
            raise
        except OSError as exc:  # writing to the upstream failed: did it answer before it stopped reading?
            answer = _early_answer(lease, method)
            if answer is None:
                raise (StaleConnection() if lease.reused else _write_failure(exc)) from None
            on_early_answer()
            return answer
        try:
            return read_answer(lease.socket, method)
        except InvalidAnswer:
            raise invalid_answer() from None
        except TimeoutError:
            raise UpstreamFault(timed_out(), reached=True) from None
        except (NoAnswer, ConnectionResetError):  # not a byte back: on a kept-alive one, it was closed meanwhile
            raise (StaleConnection() if lease.reused else UpstreamFault(unavailable(), reached=True)) from None
        except OSError:  # reset, or closed inside the head
            raise UpstreamFault(unavailable(), reached=True) from None
    except BaseException:  # every other exit, gevent's Timeout and GreenletExit included
        lease.close()
        raise


def _early_answer(lease: Lease, method: str) -> Answer | None:
    """Return an answer the upstream sent before it stopped reading, or None."""
    try:
        lease.socket.settimeout(EARLY_ANSWER_WAIT_S)
        answer = read_answer(lease.socket, method)
    except (OSError, InvalidAnswer):
        return None
    answer.keep_alive = answer.reusable = False  # the request was not sent whole: the connection is out of step
    return answer


def _write_failure(exc: OSError) -> UpstreamFault:
    if isinstance(exc, TimeoutError):
        return UpstreamFault(timed_out(), reached=True)
    return UpstreamFault(unavailable(), reached=True)
