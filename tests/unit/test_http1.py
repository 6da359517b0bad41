"""The HTTP/1.1 exchange the proxy speaks on its upstream connections (routing.http1)."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator

import pytest

from routing.http1 import (
    MAX_HEAD_BYTES,
    IncompleteBody,
    InvalidAnswer,
    NoAnswer,
    read_answer,
    request_head,
    send_request,
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


def answer_from(pair: tuple[socket.socket, socket.socket], *pieces: bytes, close: bool = True, method: str = "GET"):
    ours, theirs = pair
    for piece in pieces:
        theirs.sendall(piece)
    if close:
        theirs.shutdown(socket.SHUT_WR)
    return read_answer(ours, method)


def body_of(answer) -> bytes:
    return b"".join(answer.body(7))


# --- Request heads --------------------------------------------------------------------------


def test_request_head_is_one_block_with_names_and_values_as_given() -> None:
    head = request_head("GET", "/a%2Fb?x=%41", [("X-Custom", "v1"), ("x-custom", "v2"), ("Host", "up:80")])
    assert head == b"GET /a%2Fb?x=%41 HTTP/1.1\r\nX-Custom: v1\r\nx-custom: v2\r\nHost: up:80\r\n\r\n"


def test_request_head_keeps_latin1_bytes() -> None:
    value = "caf\u00e9".encode().decode("latin-1")  # UTF-8 bytes as a WSGI server hands them over
    assert request_head("GET", "/", [("X-Name", value)]).endswith(b"X-Name: caf\xc3\xa9\r\n\r\n")


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb"])
def test_request_head_refuses_line_breaks_in_values(value: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        request_head("GET", "/", [("X-Ok", "1"), ("X-Bad", value)])


def test_chunked_request_body_is_framed(pair) -> None:
    ours, theirs = pair
    send_request(ours, b"POST / HTTP/1.1\r\n\r\n", io.BytesIO(b"abcdefghij"), chunked=True, block_bytes=4)
    ours.shutdown(socket.SHUT_WR)
    received = b"".join(iter(lambda: theirs.recv(1024), b""))
    assert received == b"POST / HTTP/1.1\r\n\r\n4\r\nabcd\r\n4\r\nefgh\r\n2\r\nij\r\n0\r\n\r\n"


def test_counted_request_body_is_sent_as_is(pair) -> None:
    ours, theirs = pair
    send_request(ours, b"PUT / HTTP/1.1\r\n\r\n", io.BytesIO(b"x" * 10), chunked=False, block_bytes=3)
    ours.shutdown(socket.SHUT_WR)
    assert b"".join(iter(lambda: theirs.recv(1024), b"")) == b"PUT / HTTP/1.1\r\n\r\n" + b"x" * 10


def test_a_block_larger_than_the_send_buffer_arrives_whole(pair) -> None:
    """One send() takes what the buffer holds; the rest must still go (the sendall after it)."""
    ours, theirs = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    block = bytes(range(256)) * 8192  # 2 MiB: far more than one send() of a 4 KiB buffer takes
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.extend(iter(lambda: theirs.recv(65536), b"")))
    reader.start()
    send_request(ours, b"PUT / HTTP/1.1\r\n\r\n", io.BytesIO(block), chunked=False, block_bytes=len(block))
    ours.shutdown(socket.SHUT_WR)
    reader.join(timeout=10)
    assert b"".join(received) == b"PUT / HTTP/1.1\r\n\r\n" + block


# --- Answer heads ---------------------------------------------------------------------------


def test_answer_head_keeps_order_duplicates_and_names(pair) -> None:
    answer = answer_from(
        pair,
        b"HTTP/1.1 201 Created Here\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n",
    )
    assert (answer.status, answer.reason) == (201, "Created Here")
    assert answer.headers == [("Set-Cookie", "a=1"), ("set-cookie", "b=2"), ("X-Empty", ""), ("Content-Length", "0")]
    assert answer.reusable


def test_answer_head_split_across_reads(pair) -> None:
    ours, theirs = pair
    result = {}

    def read() -> None:
        result["answer"] = read_answer(ours, "GET")

    reader = threading.Thread(target=read)
    reader.start()
    for piece in (b"HTTP/1.1 200 OK\r", b"\nContent-Le", b"ngth: 2\r\n\r", b"\nok"):
        theirs.sendall(piece)
    reader.join(5)
    assert body_of(result["answer"]) == b"ok"


def test_interim_answers_are_skipped(pair) -> None:
    answer = answer_from(
        pair,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    assert answer.status == 200
    assert answer.body_in_buffer == b"ok"


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\nSet-Cookie: injected=1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\n\r\n",
    ],
)
def test_invalid_answer_heads_are_refused(pair, head: bytes) -> None:
    with pytest.raises(InvalidAnswer):
        answer_from(pair, head)


def test_an_oversized_answer_head_is_refused(pair) -> None:
    ours, theirs = pair
    theirs.setblocking(False)
    filler = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * (MAX_HEAD_BYTES + 10)
    sender = threading.Thread(target=lambda: (theirs.setblocking(True), theirs.sendall(filler)))
    sender.start()
    with pytest.raises(InvalidAnswer, match="too large"):
        read_answer(ours, "GET")
    ours.close()
    sender.join(5)


def test_closing_without_an_answer_is_no_answer(pair) -> None:
    with pytest.raises(NoAnswer):
        answer_from(pair)


def test_closing_inside_the_head_is_a_connection_error(pair) -> None:
    with pytest.raises(ConnectionError) as caught:
        answer_from(pair, b"HTTP/1.1 200 OK\r\nContent-")
    assert not isinstance(caught.value, NoAnswer)


# --- Bodies ---------------------------------------------------------------------------------


def test_counted_body_streams_then_the_connection_is_reusable(pair) -> None:
    ours, theirs = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n0123456789")
    answer = read_answer(ours, "GET")
    assert answer.body_in_buffer is None
    blocks = answer.body(7)
    assert next(blocks) == b"0123456789"
    theirs.sendall(b"abcdefghij")
    assert b"".join(blocks) == b"abcdefghij"
    assert answer.reusable


def test_a_counted_body_cut_short_raises(pair) -> None:
    answer = answer_from(pair, b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nonly this")
    with pytest.raises(IncompleteBody):
        body_of(answer)
    assert not answer.reusable


def test_chunked_body_is_decoded_with_extensions_and_trailers(pair) -> None:
    answer = answer_from(
        pair,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5;name=value\r\nhello\r\n",
        b"A\r\n, 10 bytes\r\n0\r\nX-Trailer: t\r\n\r\n",
        close=False,
    )
    assert answer.chunked and answer.body_in_buffer is None
    assert body_of(answer) == b"hello, 10 bytes"
    assert answer.reusable


@pytest.mark.parametrize("size_line", [b"0x5", b"+5", b"5_0", b"", b"g"])
def test_invalid_chunk_sizes_are_refused(pair, size_line: bytes) -> None:
    answer = answer_from(pair, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size_line + b"\r\nhello\r\n")
    with pytest.raises(InvalidAnswer):
        body_of(answer)


def test_a_chunked_body_cut_short_raises(pair) -> None:
    answer = answer_from(pair, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort")
    with pytest.raises(IncompleteBody):
        body_of(answer)


def test_chunk_data_longer_than_its_size_is_refused(pair) -> None:
    answer = answer_from(pair, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n")
    with pytest.raises(InvalidAnswer):
        body_of(answer)


def test_transfer_encoding_wins_over_content_length_and_the_connection_is_dropped(pair) -> None:
    answer = answer_from(
        pair,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        close=False,
    )
    assert body_of(answer) == b"ok"
    assert not answer.reusable


def test_a_body_without_framing_runs_until_close(pair) -> None:
    answer = answer_from(pair, b"HTTP/1.1 200 OK\r\n\r\nall of ", b"this")
    assert answer.close_delimited
    assert body_of(answer) == b"all of this"
    assert not answer.reusable


@pytest.mark.parametrize(
    ("method", "head"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"),
    ],
)
def test_answers_without_a_body(pair, method: str, head: bytes) -> None:
    answer = answer_from(pair, head, close=False, method=method)
    assert body_of(answer) == b""
    assert answer.reusable


@pytest.mark.parametrize(
    ("head", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", False),
    ],
)
def test_connection_reuse_follows_the_answer(pair, head: bytes, reusable: bool) -> None:
    answer = answer_from(pair, head, close=False)
    assert answer.body_in_buffer == b"ok"
    assert answer.reusable is reusable
