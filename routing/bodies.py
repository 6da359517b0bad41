"""The client's request body on its way upstream: capped, counted, and checked for client faults (SPEC §4.8, §4.9).

gunicorn's body readers do not all complain when a client breaks off: a body shorter
than its ``Content-Length`` simply ends early, an aborted chunked body raises
``NoMoreData`` (an ``OSError``, which would look like an upstream fault), a malformed
chunk size raises gunicorn's own parse errors. ``BodyStream`` turns each of them into
``ClientFault``, so the exchange closes the upstream connection at once and the
breaker never counts a client's broken upload against the upstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gateway_core.conf import GatewayConfig, gateway_config
from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError
from routing.upstream import bad_request

CHUNK_BYTES: Final = 64 * 1024


def content_length(meta: Mapping[str, object]) -> int | None:
    """Return the request's ``Content-Length`` as a number, or None when absent.

    ``ValueError`` for anything but ASCII digits (gunicorn refuses those already;
    this is the gateway's own guard).
    """
    length = meta.get("CONTENT_LENGTH")
    if not length:
        return None
    text = str(length)
    if not (text.isascii() and text.isdigit()):
        raise ValueError("invalid Content-Length")
    return int(text)


def reject_large_body(ctx: RequestContext) -> None:
    """Refuse a body whose Content-Length exceeds the cap, before anything is forwarded: 413."""
    try:
        length = content_length(ctx.request.META)
    except ValueError:
        raise GatewayError(400, ErrorCode.BAD_REQUEST, "The Content-Length header is invalid.") from None
    if length is not None and length > gateway_config().max_body_bytes:
        raise too_large()


def too_large() -> GatewayError:
    return GatewayError(413, ErrorCode.PAYLOAD_TOO_LARGE, "The request body is larger than the gateway accepts.")


class BodyStream:
    """The client's request body as a file-like object, counted against the cap as it streams.

    ``expected``: the announced ``Content-Length`` (None for a chunked body). A body
    that ends before it, or any error reading it, raises ``ClientFault``.
    """

    __slots__ = ("expected", "limit_bytes", "sent_bytes", "stream")

    def __init__(self, stream: object, limit_bytes: int, expected: int | None = None) -> None:
        self.stream = stream
        self.limit_bytes = limit_bytes
        self.expected = expected
        self.sent_bytes = 0

    def read(self, size: int = -1) -> bytes:
        want = size if size and size > 0 else CHUNK_BYTES
        try:
            data: bytes = self.stream.read(want)  # type: ignore[attr-defined]  # wsgi.input
        except Exception:  # gunicorn's NoMoreData, InvalidChunkSize, ...; a reset client socket
            raise bad_request() from None
        self.sent_bytes += len(data)
        if self.sent_bytes > self.limit_bytes:
            raise too_large()
        if not data and self.expected is not None and self.sent_bytes < self.expected:
            raise bad_request("The request body ended before its Content-Length.")
        return data


def request_body(meta: Mapping[str, object], config: GatewayConfig) -> BodyStream | None:
    """Return the streamed body, or None when the request has none."""
    chunked = "chunked" in str(meta.get("HTTP_TRANSFER_ENCODING", "")).lower()
    length = None if chunked else content_length(meta)
    if not chunked and not length:
        return None
    return BodyStream(meta["wsgi.input"], config.max_body_bytes, length)
