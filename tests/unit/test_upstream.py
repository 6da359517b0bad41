"""Every branch of the upstream exchange ends in one family, with its lease closed (SPEC §4.8).

A real loopback listener plays the upstream (a script per test); the client body is a
``BodyStream`` over an in-memory stream that behaves like gunicorn's readers.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from gunicorn.http.errors import InvalidChunkSize, NoMoreData

from gateway_core.errors import GatewayError
from routing.bodies import BodyStream
from routing.http1 import request_head
from routing.upstream import (
    ClientFault,
    InvalidUpstreamAnswer,
    Lease,
    StaleConnection,
    UpstreamFault,
    exchange,
)

Script = Callable[[socket.socket], None]


@pytest.fixture
def upstream() -> Iterator[Callable[[Script], str]]:
    """Start a one-connection-at-a-time loopback upstream running ``script``; return its origin."""
    listeners: list[socket.socket] = []

    def start(script: Script) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn, contextlib.suppress(OSError):
                    script(conn)

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for listener in listeners:
        listener.close()


def read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def ok(conn: socket.socket) -> None:
    read_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    conn.recv(1)  # hold the connection until the client is done


HEAD = request_head("POST", "/x", [("Host", "up"), ("Content-Length", "10")])
GET_HEAD = request_head("GET", "/x", [("Host", "up")])


def lease_for(origin: str, read_timeout_s: float = 2.0) -> Lease:
    return Lease(origin, 1.0, read_timeout_s, "")


class BrokenStream:
    """A client body reader that fails like gunicorn's do."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def read(self, size: int = -1) -> bytes:
        raise self.error


def run(lease: Lease, body: BodyStream | None, head: bytes = HEAD, method: str = "POST", **kwargs: object):
    return exchange(lease, head, body, method=method, chunked=False, block_bytes=4, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "stream",
    [
        io.BytesIO(b"short"),  # 5 of the announced 10 bytes, then the end
        BrokenStream(NoMoreData(b"")),  # an aborted chunked body (an OSError)
        BrokenStream(InvalidChunkSize("zz")),  # a malformed chunk size
        BrokenStream(ConnectionResetError()),  # the client's socket reset
    ],
    ids=["short", "no-more-data", "bad-chunk", "reset"],
)
def test_a_broken_client_body_is_a_client_fault_and_closes_the_lease(upstream, stream) -> None:
    lease = lease_for(upstream(lambda conn: conn.recv(65536) and conn.recv(65536)))
    with pytest.raises(ClientFault) as raised:
        run(lease, BodyStream(stream, limit_bytes=100, expected=10))
    assert raised.value.error.status == 400
    assert lease.released and lease.socket.fileno() == -1


def test_a_body_over_the_cap_is_413_and_closes_the_lease(upstream) -> None:
    lease = lease_for(upstream(lambda conn: conn.recv(65536) and conn.recv(65536)))
    with pytest.raises(GatewayError) as raised:
        run(lease, BodyStream(io.BytesIO(b"x" * 50), limit_bytes=8))
    assert raised.value.status == 413
    assert lease.socket.fileno() == -1


def test_no_answer_on_a_fresh_connection_is_an_upstream_fault_that_reached_it(upstream) -> None:
    lease = lease_for(upstream(read_head))  # reads, then closes without a byte
    with pytest.raises(UpstreamFault) as raised:
        run(lease, None, GET_HEAD, "GET")
    assert not isinstance(raised.value, StaleConnection)
    assert raised.value.reached and raised.value.error.status == 502
    assert lease.socket.fileno() == -1


def test_no_answer_on_a_kept_alive_connection_is_a_stale_connection(upstream) -> None:
    close_now = threading.Event()

    def answer_once_then_close(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        close_now.wait(5)  # then close the idle connection, as an upstream's keep-alive timeout does

    origin = upstream(answer_once_then_close)
    first = lease_for(origin)
    answer = run(first, None, GET_HEAD, "GET")
    assert answer.body_in_buffer == b"ok"
    first.release(reusable=answer.reusable)
    second = lease_for(origin)
    assert second.reused
    close_now.set()
    time.sleep(0.2)
    with pytest.raises(StaleConnection):
        run(second, None, GET_HEAD, "GET")
    assert second.socket.fileno() == -1


def test_a_silent_upstream_is_a_timeout(upstream) -> None:
    lease = lease_for(upstream(lambda conn: (read_head(conn), conn.recv(1))), read_timeout_s=0.3)
    with pytest.raises(UpstreamFault) as raised:
        run(lease, None, GET_HEAD, "GET")
    assert raised.value.error.status == 504
    assert lease.socket.fileno() == -1


def test_an_invalid_answer_is_its_own_family(upstream) -> None:
    lease = lease_for(upstream(lambda conn: (read_head(conn), conn.sendall(b"HTTP/1.1 2\xb2\xb2 X\r\n\r\n"))))
    with pytest.raises(InvalidUpstreamAnswer) as raised:
        run(lease, None, GET_HEAD, "GET")
    assert raised.value.error.status == 502
    assert not isinstance(raised.value, UpstreamFault)  # the breaker never counts it
    assert lease.socket.fileno() == -1


def test_an_answer_sent_before_the_body_was_read_is_returned(upstream) -> None:
    def early(conn: socket.socket) -> None:
        read_head(conn)
        conn.sendall(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)

    lease = lease_for(upstream(early))
    noticed: list[bool] = []
    body = BodyStream(io.BytesIO(b"y" * 8_000_000), limit_bytes=10_000_000, expected=8_000_000)
    big_head = request_head("POST", "/x", [("Host", "up"), ("Content-Length", "8000000")])
    answer = exchange(
        lease,
        big_head,
        body,
        method="POST",
        chunked=False,
        block_bytes=65536,
        on_early_answer=lambda: noticed.append(True),
    )
    assert answer.status == 413
    assert noticed == [True]
    assert not answer.reusable


def test_a_refused_connection_never_reached_the_upstream() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UpstreamFault) as raised:
        lease_for(f"http://127.0.0.1:{port}")
    assert not raised.value.reached and raised.value.error.status == 502
