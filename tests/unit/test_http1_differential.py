"""``routing.http1`` against h11 on the same upstream answers: same accept/refuse decision, same framing.

Hypothesis generates answer heads and bodies from valid and hostile parts (status
lines, header names and values, duplicate and odd ``Content-Length``, chunked bodies
with bad sizes, extensions and trailers, bare CR/LF, folded lines, early EOF). Each is
parsed by the gateway's parser (over a real socket pair) and by h11, the reference
HTTP/1.1 state machine httpcore builds on. When both accept, status, headers and the
delivered body must be equal; when they disagree, the case must be one of the
divergences listed in ``DIVERGENCES``, each a place where the gateway follows RFC 9112
more literally or is stricter than h11 (never looser).

The default run is small (``HTTP1_FUZZ_EXAMPLES``, 300); the documented big run is
``HTTP1_FUZZ_EXAMPLES=50000 .venv/bin/pytest tests/unit/test_http1_differential.py --timeout=0``
(about 19 minutes on two cores).
"""

from __future__ import annotations

import os
import re
import socket

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.http1 import InvalidAnswer, read_answer

EXAMPLES = int(os.environ.get("HTTP1_FUZZ_EXAMPLES", "300"))

TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~", min_size=1, max_size=12
)
HOSTILE_BYTES = st.sampled_from([b"\r", b"\n", b"\x00", b" ", b"\t", b":", b"\xb2", b"\x7f", b"\xff", b"\r\n "])
VALUE = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 ;=,/-", max_size=16).map(str.encode),
    st.tuples(st.binary(max_size=4), HOSTILE_BYTES, st.binary(max_size=4)).map(b"".join),
)
LENGTH_VALUE = st.sampled_from(
    [b"0", b"5", b"12", b"5, 5", b"5,6", b"-1", b"+5", b" 5", b"0x5", b"\xb2", b"", b"99999"]
)
TE_VALUE = st.sampled_from([b"chunked", b"gzip, chunked", b"chunked, gzip", b"gzip", b"identity", b"Chunked"])
STATUS_LINE = st.one_of(
    st.sampled_from(
        [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 404 Not Found",
            b"HTTP/1.0 200 OK",
            b"HTTP/1.1 204 No Content",
            b"HTTP/1.1 304 Not Modified",
            b"HTTP/1.1 200",
            b"HTTP/1.1 599 Odd",
        ]
    ),
    st.tuples(
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1", b"HTTP/1.x", b"ICY"]),
        st.sampled_from([b" 200", b" 2000", b" 20", b" \xb2\xb20", b" 200 OK", b" 200 O\x00K", b"  200 OK"]),
    ).map(b"".join),
)


@st.composite
def header_lines(draw: st.DrawFn) -> list[bytes]:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["plain", "length", "te", "connection", "hostile-name", "fold"]))
        if kind == "plain":
            lines.append(draw(TOKEN).encode() + b": " + draw(VALUE))
        elif kind == "length":
            lines.append(b"Content-Length: " + draw(LENGTH_VALUE))
        elif kind == "te":
            lines.append(b"Transfer-Encoding: " + draw(TE_VALUE))
        elif kind == "connection":
            lines.append(b"Connection: " + draw(st.sampled_from([b"close", b"keep-alive", b"Close"])))
        elif kind == "hostile-name":
            lines.append(draw(st.sampled_from([b"Bad Name: x", b"Bad\x00: x", b": x", b"NoColon", b"X-\xb2: 1"])))
        else:
            lines.append(b" folded continuation")
    return lines


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["raw", "chunked", "bad-chunked"]))
    if kind == "raw":
        return draw(st.binary(max_size=30))
    chunks = draw(st.lists(st.binary(min_size=1, max_size=10), max_size=3))
    out = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks)
    if kind == "chunked":
        extension = draw(st.sampled_from([b"", b";ext=1"]))
        trailer = draw(st.sampled_from([b"", b"X-Trailer: 1\r\n"]))
        return out + b"0" + extension + b"\r\n" + trailer + b"\r\n"
    return out + draw(st.sampled_from([b"zz\r\n", b"5\r\nabc", b"-1\r\n", b"3\r\nabcXX0\r\n\r\n", b"0\r\n"]))


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    head = b"\r\n".join([draw(STATUS_LINE), *draw(header_lines())])
    return head + b"\r\n\r\n" + draw(bodies())


def ours(data: bytes, method: str) -> tuple[str, object]:
    """Parse with routing.http1 over a socket pair whose far end sent ``data`` and closed."""
    near, far = socket.socketpair()
    try:
        far.sendall(data)
        far.close()
        near.settimeout(2)
        try:
            answer = read_answer(near, method)
            body = b"".join(answer.body(4096))
        except (InvalidAnswer, OSError):
            return "refused", None
        headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
        return "accepted", (answer.status, headers, body)
    finally:
        near.close()


def theirs(data: bytes, method: str) -> tuple[str, object]:
    """Parse with h11 as a client that sent ``method`` and then saw ``data`` and EOF."""
    conn = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=64 * 1024)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "upstream")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    status, headers, body = None, None, b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status, headers = event.status_code, [(n, v) for n, v in event.headers.raw_items()]
                headers = [(n.lower(), v) for n, v in headers]
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return "accepted", (status, headers, body)
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return "refused", None
    except h11.RemoteProtocolError:
        return "refused", None


def divergence(data: bytes, method: str, our_verdict: str) -> str | None:
    """Name the documented reason two verdicts may differ on ``data``, or None."""
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    lines = head.split(b"\r\n")
    te = [line for line in lines if line.startswith(b"transfer-encoding:")]
    codings = [c.strip() for line in te for c in line.split(b":", 1)[1].split(b",")]
    if te and our_verdict == "accepted" and codings != [b"chunked"]:
        # RFC 9112 §6.3: other codings are passed on still encoded (read until close when
        # chunked is not last); h11 supports chunked alone.
        return "a transfer coding besides chunked"
    if te and our_verdict == "accepted" and any(line.startswith(b"content-length:") for line in lines):
        return "Transfer-Encoding with Content-Length (RFC 9112 §6.3: TE wins; h11 may refuse the length)"
    if our_verdict == "refused" and (b"\n" in head.replace(b"\r\n", b"") or b"\r" in head.replace(b"\r\n", b"")):
        return "bare CR or LF: the gateway refuses what h11 tolerates"
    if our_verdict == "refused" and any(line.startswith((b" ", b"\t")) for line in lines[1:]):
        return "obs-fold: the gateway refuses folded lines"
    if our_verdict == "refused" and lines[0].split(b" ")[0] not in (b"http/1.1", b"http/1.0"):
        return "HTTP/1.x only"
    if our_verdict == "refused" and re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", head):
        return "a control character in the head (RFC 9110 §5.5): the gateway refuses what h11 tolerates"
    if our_verdict == "accepted" and any(line.startswith(b"content-length:") and b"," in line for line in lines):
        return "identical comma-listed Content-Length values (RFC 9110 §8.6 allows accepting them)"
    if method == "HEAD" or lines[0][9:12] in (b"204", b"304"):
        return "no body by status or method: framing headers are not checked"
    if b"connection: close" in head and our_verdict == "accepted":
        return "close-delimited after Connection: close"
    if any(line.startswith(b"content-length:") for line in lines) and our_verdict == "refused":
        return "a Content-Length the gateway refuses (signs, spaces inside, non-ASCII digits)"
    return None


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=answers(), method=st.sampled_from(["GET", "HEAD", "POST"]))
def test_routing_http1_agrees_with_h11(data: bytes, method: str) -> None:
    if b" 101" in data.split(b"\r\n", 1)[0]:
        return  # a protocol switch: the gateway never asks for one and refuses it
    mine, reference = ours(data, method), theirs(data, method)
    if mine[0] == reference[0] == "accepted":
        assert mine[1][0] == reference[1][0], "status"  # type: ignore[index]
        assert mine[1][2] == reference[1][2], "body framing"  # type: ignore[index]
        return
    if mine[0] == reference[0]:
        return
    reason = divergence(data, method, mine[0])
    assert reason is not None, f"undocumented divergence: ours {mine[0]}, h11 {reference[0]} on {data!r}"


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_known_hostile_answers_are_refused_by_both(data: bytes) -> None:
    assert ours(data, "GET")[0] == "refused"
    assert theirs(data, "GET")[0] == "refused"
