"""One HTTP/1.1 exchange with an upstream on an open socket: write the request, read the answer.

The proxy leases its connections from ``routing.upstream`` (which owns connecting, TLS
and keep-alive bookkeeping) and speaks HTTP/1.1 on them itself,
because ``http.client`` costs most of a proxied request's CPU: each header is validated
and written separately, and the answer's headers go through the ``email`` package's
parser. Here a request head is one ``sendall`` and an answer head one split, with the
checks a proxy needs:

- request heads carry no line break inside a value (a header cannot be injected);
- answer heads are ``HTTP/1.1`` or ``HTTP/1.0``, at most ``MAX_HEAD_BYTES`` long, with
  token names, no folded lines, no bare CR or LF (so no value can smuggle in a header of
  its own) and no other control character (RFC 9110 §5.5);
  interim ``1xx`` answers (``100 Continue``, ``103 Early Hints``) are skipped, ``101``
  is refused (the proxy never asks to switch protocols);
- the body framing follows RFC 9112 §6.3: none for ``HEAD``, ``204`` and ``304``;
  ``Transfer-Encoding: chunked`` decoded as it streams (trailers are dropped); else
  ``Content-Length``, where differing values are refused; else the body runs until the
  upstream closes the connection, which is then not reused;
- a body that ends before its framing says raises ``IncompleteBody``, so the caller
  can drop its client connection instead of passing on a truncated answer as whole.

Header values are strings holding bytes as Latin-1 (PEP 3333's convention), so
whatever bytes a client sent reach the upstream unchanged and back.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Final, Protocol

MAX_HEAD_BYTES: Final = 64 * 1024
MAX_HEADERS: Final = 200
MAX_CHUNK_LINE: Final = 4096
RECV_BYTES: Final = 64 * 1024
_TOKEN_CHARS: Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX_DIGITS: Final = frozenset(b"0123456789abcdefABCDEF")
# Control characters a field may not hold (HTAB aside; CR and LF are checked per line).
_CONTROL_CHARS: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _ascii_digits(text: str) -> bool:
    """``str.isdigit`` also accepts ``'²'`` (which ``int`` refuses): only 0-9 count here."""
    return text.isascii() and text.isdigit()


class InvalidAnswer(ValueError):
    """The upstream's answer is not valid HTTP/1.x."""


class IncompleteBody(OSError):
    """The upstream closed the connection before the end of the body its framing announced."""


class BodySource(Protocol):
    """A request body: ``read(size)`` returns up to ``size`` bytes, ``b""`` at the end."""

    def read(self, size: int = -1) -> bytes: ...


# --- Requests -------------------------------------------------------------------------------


def request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """Return the request line and headers as bytes; ``ValueError`` if a line break hides in them."""
    text = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    # Exactly one line feed per line: a CR or LF inside a name or value would start a new header.
    lines = len(headers) + 2
    if text.count("\n") != lines or text.count("\r") != lines:
        raise ValueError("a request header contains a line break")
    return text.encode("latin-1")


def send_request(
    sock: socket.socket,
    head: bytes,
    body: BodySource | None,
    *,
    chunked: bool,
    block_bytes: int,
) -> None:
    """Send ``head`` and stream ``body`` (framed in chunks when ``chunked``)."""
    _send_all(sock, head)
    if body is None:
        return
    while block := body.read(block_bytes):
        if chunked:
            _send_all(sock, b"%x\r\n%b\r\n" % (len(block), block))
        else:
            _send_all(sock, block)
    if chunked:
        _send_all(sock, b"0\r\n\r\n")


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Send all of ``data``: one ``send`` first, ``sendall`` for what it left.

    gevent's ``sendall`` asks the socket for its send buffer size (a system call) each
    time it is called; a request head fits the buffer, so most calls stop after one
    ``send``. Errors and timeouts are the same either way.
    """
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


# --- Answers --------------------------------------------------------------------------------


class Answer:
    """The head of an upstream answer and a reader for its body.

    ``headers`` keeps every header in order with its original name (duplicates such as
    ``Set-Cookie`` stay separate). ``reusable`` becomes true once the whole body has
    been read and the connection may carry another request.
    """

    __slots__ = (
        "_buffer",
        "_remaining",
        "_sock",
        "chunked",
        "close_delimited",
        "headers",
        "keep_alive",
        "reason",
        "reusable",
        "status",
    )

    def __init__(
        self,
        sock: socket.socket,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        buffer: bytes,
        *,
        keep_alive: bool = True,
    ) -> None:
        self._sock = sock
        self.status = status
        self.reason = reason
        self.headers = headers
        self._buffer = buffer
        self.chunked = False
        self._remaining = -1  # bytes of body left; -1: until the connection closes
        self.close_delimited = False
        self.keep_alive = keep_alive  # the version's default (HTTP/1.0: close), until ``frame`` reads Connection
        self.reusable = False

    def frame(self, request_method: str) -> None:
        """Work out how the body is delimited (RFC 9112 §6.3) and whether the connection stays open."""
        transfer_encoding = None
        lengths = []
        connection = ""
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == "transfer-encoding":
                transfer_encoding = value if transfer_encoding is None else f"{transfer_encoding}, {value}"
            elif lowered == "content-length":
                lengths.extend(part.strip() for part in value.split(","))
            elif lowered == "connection":
                connection += "," + value.lower()
        if "close" in connection:
            self.keep_alive = False
        elif "keep-alive" in connection:  # HTTP/1.0's opt-in
            self.keep_alive = True
        if request_method == "HEAD" or self.status in (204, 304):
            self._remaining = 0
        elif transfer_encoding is not None:
            codings = [coding.strip().lower() for coding in transfer_encoding.split(",")]
            if codings.count("chunked") > 1:
                raise InvalidAnswer("chunked applied more than once")  # RFC 9112 §7: a sender must not
            if codings[-1] == "chunked":
                self.chunked = True
            else:
                self.close_delimited = True
            if lengths:  # both framings: a sign of request smuggling, never reuse the connection
                self.keep_alive = False
        elif lengths:
            if len(set(lengths)) != 1 or not _ascii_digits(lengths[0]):
                raise InvalidAnswer("invalid Content-Length")
            self._remaining = int(lengths[0])
        else:
            self.close_delimited = True
        if self.close_delimited:
            self.keep_alive = False
        if self._remaining == 0 and not self.chunked:
            self.reusable = self.keep_alive and not self._buffer

    @property
    def body_in_buffer(self) -> bytes | None:
        """Return the whole body when it already arrived with the head, else None."""
        if self.chunked or self._remaining < 0 or len(self._buffer) < self._remaining:
            return None
        body = self._buffer[: self._remaining]
        extra = len(self._buffer) > self._remaining  # bytes past the body: the stream is out of step
        self._buffer, self._remaining = b"", 0
        self.reusable = self.keep_alive and not extra
        return body

    def body(self, block_bytes: int = RECV_BYTES) -> Iterator[bytes]:
        """Yield the body (de-chunked, never decompressed) in blocks of at most ``block_bytes`` as it arrives."""
        if self.chunked:
            yield from self._chunks(block_bytes)
        elif self._remaining >= 0:
            yield from self._counted(block_bytes)
        else:
            yield from self._until_close(block_bytes)

    def _counted(self, block_bytes: int) -> Iterator[bytes]:
        remaining = self._remaining
        if self._buffer:
            block, self._buffer = self._buffer[:remaining], self._buffer[remaining:]
            remaining -= len(block)
            self._remaining = remaining
            yield block
        while remaining > 0:
            block = self._sock.recv(min(block_bytes, remaining))
            if not block:
                raise IncompleteBody(f"{remaining} bytes of the body missing")
            remaining -= len(block)
            self._remaining = remaining
            yield block
        self.reusable = self.keep_alive and not self._buffer

    def _until_close(self, block_bytes: int) -> Iterator[bytes]:
        if self._buffer:
            block, self._buffer = self._buffer, b""
            yield block
        while block := self._sock.recv(block_bytes):
            yield block

    def _chunks(self, block_bytes: int) -> Iterator[bytes]:
        while True:
            line = self._line(MAX_CHUNK_LINE)
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not size_text or len(size_text) > 16 or not _HEX_DIGITS.issuperset(size_text):
                raise InvalidAnswer("invalid chunk size")
            size = int(size_text, 16)
            if size == 0:
                while self._line(MAX_CHUNK_LINE):  # trailers: read and dropped (hop-by-hop here)
                    pass
                self.reusable = self.keep_alive and not self._buffer
                return
            while size > 0:
                if not self._buffer and not self._fill():
                    raise IncompleteBody("the chunked body ended early")
                block, self._buffer = self._buffer[: min(size, block_bytes)], self._buffer[min(size, block_bytes) :]
                size -= len(block)
                yield block
            if self._line(2):
                raise InvalidAnswer("chunk data longer than its size")

    def _line(self, limit: int) -> bytes:
        """Return the next CRLF-terminated line of the body stream, without its terminator."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
                return line.rstrip(b"\r")
            if len(self._buffer) > limit:
                raise InvalidAnswer("line too long in a chunked body")
            if not self._fill():
                raise IncompleteBody("the chunked body ended early")

    def _fill(self) -> bool:
        data = self._sock.recv(RECV_BYTES)
        self._buffer += data
        return bool(data)


def read_answer(sock: socket.socket, request_method: str) -> Answer:
    """Read the final answer's head from ``sock`` (interim 1xx answers skipped).

    Raises ``InvalidAnswer`` for a malformed or oversized head, and ``ConnectionError``
    when the upstream closes before sending a whole head (``NoAnswer`` when it sent
    nothing at all: a kept-alive connection the upstream had already closed).
    """
    buffer = b""
    received = False
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise InvalidAnswer("answer head too large")
            data = sock.recv(RECV_BYTES)
            if not data:
                if received:
                    raise ConnectionError("the upstream closed the connection inside the answer head")
                raise NoAnswer("the upstream closed the connection without answering")
            received = True
            buffer += data
            continue
        if end > MAX_HEAD_BYTES:
            raise InvalidAnswer("answer head too large")
        answer = _parse_head(sock, buffer[:end], buffer[end + 4 :])
        if 100 <= answer.status < 200:
            if answer.status == 101:
                raise InvalidAnswer("unexpected 101 Switching Protocols")
            buffer = answer._buffer  # an interim answer: the final one follows
            continue
        answer.frame(request_method)
        return answer


class NoAnswer(ConnectionError):
    """The upstream closed the connection without sending a byte of an answer."""


def _parse_head(sock: socket.socket, head: bytes, rest: bytes) -> Answer:
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
        raise InvalidAnswer("bare CR or LF in the answer head")  # would let an upstream inject headers
    if _CONTROL_CHARS.search(text):
        raise InvalidAnswer("control character in the answer head")  # RFC 9110 §5.5: NUL, CTLs
    version, _, status_reason = lines[0].partition(" ")
    status_text, _, reason = status_reason.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(status_text) != 3 or not _ascii_digits(status_text):
        raise InvalidAnswer("invalid status line")
    if len(lines) > MAX_HEADERS + 1:
        raise InvalidAnswer("too many answer headers")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or not _TOKEN_CHARS.issuperset(name):
            raise InvalidAnswer("invalid answer header line")  # includes folded (obs-fold) lines
        headers.append((name, value.strip(" \t")))
    return Answer(sock, int(status_text), reason, headers, rest, keep_alive=version != "HTTP/1.0")
