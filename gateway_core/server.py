"""What the gateway needs from its WSGI server (gunicorn) per request, beyond WSGI (SPEC §4.8, §4.9).

Two things WSGI cannot say:

- **Answer ``Expect: 100-continue`` only once the request passed its checks.** gunicorn
  writes ``100 Continue`` as soon as it has parsed the head, so a client whose request
  is refused (401, 404, 413) would start uploading anyway. The ``pre_request`` hook of
  ``gateway_project/gunicorn.conf.py`` calls ``adopt``, which takes the expectation over;
  the proxy calls ``continue_if_expected`` just before it reads the body.
- **Close the client connection after a response that left its body unread** (an
  oversized body refused 413, a refusal before a deferred ``100 Continue``, a client
  fault, an upstream that answered early): otherwise gunicorn would read the rest of the
  body, or the next request would be parsed out of it.

gunicorn has no public API for either: ``adopt`` clears the parsed request's
``_expected_100_continue`` and sets its ``must_close`` (read by gunicorn after the
response), and hangs the gateway's state on the request body object the environ
carries as ``wsgi.input``. Under any other server these functions do nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_ATTRIBUTE = "gateway_server_request"


class ServerRequest:
    """The gateway's handle on gunicorn's parsed request (held weakly)."""

    __slots__ = ("continue_deferred", "continue_sent", "request")

    def __init__(self, request: Any, continue_deferred: bool) -> None:
        self.request = weakref.ref(request)
        self.continue_deferred = continue_deferred
        self.continue_sent = False

    def close_after_response(self) -> None:
        request = self.request()
        if request is not None:
            request.must_close = True


def adopt(request: Any) -> None:
    """gunicorn ``pre_request`` hook: take over ``100-continue`` and give the app a handle on the request."""
    deferred = bool(getattr(request, "_expected_100_continue", False))
    if deferred:
        request._expected_100_continue = False  # gunicorn answers it in wsgi.create, right after this hook
    body = getattr(request, "body", None)
    if body is not None:
        setattr(body, _ATTRIBUTE, ServerRequest(request, deferred))


def _handle(meta: Mapping[str, object]) -> ServerRequest | None:
    return getattr(meta.get("wsgi.input"), _ATTRIBUTE, None)


def continue_if_expected(meta: Mapping[str, object]) -> None:
    """Send the deferred ``100 Continue`` now, once, if the client asked for one."""
    handle = _handle(meta)
    if handle is None or not handle.continue_deferred or handle.continue_sent:
        return
    handle.continue_sent = True
    sock = meta.get("gunicorn.socket")
    if sock is not None:
        sock.sendall(CONTINUE)  # type: ignore[attr-defined]  # a socket


def close_after_response(meta: Mapping[str, object]) -> None:
    """Have the server close the client connection once this response is sent."""
    handle = _handle(meta)
    if handle is not None:
        handle.close_after_response()


def response_ready(meta: Mapping[str, object], status: int) -> None:
    """Close after a 413, or after any answer given before a deferred ``100 Continue`` went out."""
    handle = _handle(meta)
    if handle is not None and (status == 413 or (handle.continue_deferred and not handle.continue_sent)):
        handle.close_after_response()
