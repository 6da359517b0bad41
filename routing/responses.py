"""Response translation: the upstream's answer as the Django response the client gets (SPEC §4.7).

Headers go through the header policy (``routing.headers``); the body is passed on as
it arrives, never decoded or decompressed: whole when it came with the head, else
streamed, with the upstream connection given back (or closed) when the body ends or
the client goes away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpResponse, StreamingHttpResponse

from routing.headers import LOCATION_HEADERS, client_answer_headers
from routing.http1 import Answer
from routing.upstream import Lease, invalid_answer

logger = logging.getLogger("gateway.proxy")

CHUNK_BYTES = 64 * 1024


class RawSetCookie:
    """One upstream ``Set-Cookie`` value, kept byte for byte.

    Stored in ``response.cookies`` so both our WSGI fast path and Django's handler
    emit it as its own header (they call ``output(header="")`` on each value).
    """

    __slots__ = ("coded_value", "key", "value")

    def __init__(self, value: str) -> None:
        self.value = value
        pair = value.split(";", 1)[0]
        self.key, _, self.coded_value = (part.strip() for part in pair.partition("="))

    def output(self, attrs: object = None, header: str = "Set-Cookie:") -> str:
        return f"{header} {self.value}" if header else self.value

    def OutputString(self, attrs: object = None) -> str:  # http.cookies.Morsel's name
        return self.value


def build_response(
    answer: Answer,
    lease: Lease,
    method: str,
    rewrite_location: Callable[[str], str] | None = None,
) -> HttpResponse:
    """Turn the upstream answer into a Django response; the body streams unless it came with the head.

    Raises ``InvalidUpstreamAnswer`` (lease closed) for a status Django cannot send.
    """
    merged: dict[str, tuple[str, str]] = {}  # repeated headers joined with ", ", Set-Cookie aside
    cookies: list[str] = []
    for name, value in client_answer_headers(answer.headers, chunked=answer.chunked):
        lowered = name.lower()
        if lowered == "set-cookie":
            cookies.append(value)
            continue
        if rewrite_location is not None and lowered in LOCATION_HEADERS:
            value = rewrite_location(value)
        previous = merged.get(lowered)
        merged[lowered] = (name, value) if previous is None else (previous[0], f"{previous[1]}, {value}")
    headers = dict(merged.values())
    try:
        content = b"" if method == "HEAD" or answer.status in (204, 304) else answer.body_in_buffer
        if content is not None:
            lease.release(reusable=answer.reusable)
            response: HttpResponse = HttpResponse(
                content, status=answer.status, reason=answer.reason or None, headers=headers
            )
        else:
            response = StreamingHttpResponse(  # type: ignore[assignment]  # same interface for our callers
                UpstreamBody(answer, lease), status=answer.status, reason=answer.reason or None, headers=headers
            )
    except ValueError:  # a status outside 100-599
        lease.close()
        raise invalid_answer() from None
    if "content-type" not in merged:  # Django's default type: only the upstream's counts
        del response.headers["Content-Type"]
    for index, value in enumerate(cookies):
        dict.__setitem__(response.cookies, str(index), RawSetCookie(value))
    return response


class UpstreamBody:
    """The upstream body as it arrives (still encoded); gives the connection back when done or closed.

    A class rather than a generator: a generator never started would not run its
    ``finally`` on close (a client gone before the first block), and the connection
    would never return to its pool.
    """

    __slots__ = ("answer", "blocks", "lease")

    def __init__(self, answer: Answer, lease: Lease) -> None:
        self.answer = answer
        self.lease = lease
        self.blocks = answer.body(CHUNK_BYTES)

    def __iter__(self) -> UpstreamBody:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self.blocks)
        except StopIteration:
            self.lease.release(reusable=self.answer.reusable)
            raise
        except Exception as exc:
            # Re-raised so the server drops the client connection: a truncated body must not look complete.
            logger.warning("upstream body interrupted: %s", type(exc).__name__)
            self.lease.close()
            raise

    def close(self) -> None:
        self.lease.close()  # no-op after a complete body; else the rest is unread
