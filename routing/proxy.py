"""Forward a request to its HTTP upstream, with retry, fallback and the circuit breaker (SPEC §4.7-§4.9).

Options and their defaults (``GATEWAY_*`` environment variables):

- connect timeout ``GATEWAY_CONNECT_TIMEOUT_MS`` (5000): refused / DNS / TLS / connect
  timeout are "nothing reached the upstream" and are retried once on ``fallback_url``;
- read timeout ``timeout_ms`` of the service, else ``GATEWAY_UPSTREAM_TIMEOUT_MS``
  (30000): 504, retried on the fallback only for idempotent methods whose body was not
  sent yet;
- request body cap ``GATEWAY_MAX_BODY_BYTES`` (10 MiB), counted while streaming;
- circuit breaker ``GATEWAY_BREAKER_FAILURES`` (5) in a row, open ``GATEWAY_BREAKER_OPEN_S`` (30).

The pieces: ``routing.headers`` decides the headers, ``routing.bodies`` streams the
client's body, ``routing.upstream`` leases a connection and runs the exchange (and
sorts its errors into client fault / upstream fault / invalid answer),
``routing.responses`` turns the answer into the client's response. Only upstream
faults reach the breaker.

Faithfulness: the raw path and query are sent byte for byte, bodies are neither
decoded nor decompressed, redirects are returned (never followed), every
``Set-Cookie`` stays a separate header, and no cookie is ever stored.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Final

from django.http import HttpResponse

from gateway_core import server
from gateway_core.conf import GatewayConfig, gateway_config
from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError
from routing import spans
from routing.bodies import CHUNK_BYTES, BodyStream, request_body
from routing.breaker import CircuitBreaker
from routing.headers import rewrite_location, upstream_request_headers
from routing.http1 import request_head
from routing.matcher import raw_target
from routing.responses import build_response
from routing.upstream import (
    ClientFault,
    InvalidUpstreamAnswer,
    Lease,
    StaleConnection,
    UpstreamFault,
    exchange,
    split_base,
)

logger = logging.getLogger("gateway.proxy")

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

_breaker: CircuitBreaker | None = None


def breaker() -> CircuitBreaker:
    """Return this process's circuit breaker."""
    global _breaker
    if _breaker is None:
        config = gateway_config()
        _breaker = CircuitBreaker(config.breaker_failures, config.breaker_open_s)
    return _breaker


def forward(ctx: RequestContext) -> HttpResponse:
    """Send the request to ``ctx.version``'s URL (or the fallback) and return the streamed answer.

    Raises GatewayError 502 ``upstream_unavailable``, 504 ``upstream_timeout``,
    503 ``circuit_open``, 400 ``bad_request`` or 413 ``payload_too_large``.
    """
    route, version = ctx.route, ctx.version
    assert route is not None and version is not None  # noqa: S101 - resolved by the pipeline
    config = gateway_config()
    meta = ctx.request.META
    _, query = raw_target(meta)
    path = route.upstream_prefix + ctx.rest_path
    body = request_body(meta, config)
    if body is not None:
        server.continue_if_expected(meta)  # the request passed every check: now the client may send its body
    fallback = route.fallback_url if route.fallback_url and not route.fallback_url.startswith("queue://") else None
    circuits = breaker()
    send = _traced_send if spans.recording() else _send  # a client span per attempt in a sampled trace

    if circuits.allow(version.url):
        try:
            return send(ctx, version.url, path, query, body, route.timeout_ms, config)
        except UpstreamFault as fault:
            retry = fallback is not None and (
                not fault.reached
                or (ctx.request.method in IDEMPOTENT_METHODS and (body is None or body.sent_bytes == 0))
            )
            if not retry or not circuits.allow(fallback):  # type: ignore[arg-type]  # retry implies a fallback
                raise fault.error from None
    elif fallback is None or not circuits.allow(fallback):
        raise GatewayError(503, ErrorCode.CIRCUIT_OPEN, "The upstream is failing; requests are paused briefly.")
    assert fallback is not None  # noqa: S101 - both branches above reach here only with a fallback
    ctx.fallback_used = True
    try:
        response = send(ctx, fallback, path, query, body, route.timeout_ms, config)
    except UpstreamFault as fault:
        raise fault.error from None
    response["X-Gateway-Fallback"] = "1"
    return response


def _send(
    ctx: RequestContext,
    base_url: str,
    path: str,
    query: str | None,
    body: BodyStream | None,
    timeout_ms: int | None,
    config: GatewayConfig,
) -> HttpResponse:
    """One upstream (the version's URL or the fallback): lease, exchange, translate; counts for the breaker."""
    origin, base_path, netloc = split_base(base_url)
    target = (base_path + path) or "/"
    if query is not None:
        target += "?" + query
    headers = upstream_request_headers(ctx, netloc, config)
    spans.propagate(headers)  # the upstream gets the gateway's traceparent, never the client's
    method = ctx.request.method or "GET"
    ctx.upstream = base_url
    chunked = body is not None and "Content-Length" not in headers
    if chunked:  # the client sent its body in chunks: so do we, re-framed as it streams
        headers["Transfer-Encoding"] = "chunked"
    try:
        head = request_head(method, target, list(headers.items()))
    except ValueError:
        logger.warning("request head not forwardable: a header contains a line break", extra=_log_extra(ctx))
        raise GatewayError(400, ErrorCode.BAD_REQUEST, "A request header cannot be forwarded.") from None
    read_timeout_s = (timeout_ms or config.upstream_timeout_ms) / 1000
    circuits = breaker()
    for attempt in range(2):
        try:
            lease = Lease(origin, config.connect_timeout_ms / 1000, read_timeout_s, config.upstream_ca_bundle)
            answer = exchange(
                lease,
                head,
                body,
                method=method,
                chunked=chunked,
                block_bytes=CHUNK_BYTES,
                on_early_answer=lambda: server.close_after_response(ctx.request.META),
            )
            response = build_response(answer, lease, method, partial(rewrite_location, ctx, base_url, config))
        except StaleConnection:
            # A kept-alive connection the upstream closed as we sent: nothing was processed.
            if not attempt and body is None and method in IDEMPOTENT_METHODS:
                continue
            circuits.record_failure(base_url)
            raise
        except UpstreamFault as fault:
            logger.warning("upstream request failed: %s", fault.error.code, extra=_log_extra(ctx))
            circuits.record_failure(base_url)
            raise
        except ClientFault as fault:
            server.close_after_response(ctx.request.META)  # what is left of the client's body is not read
            raise fault.error from None
        except InvalidUpstreamAnswer as fault:
            logger.warning("upstream sent an invalid answer", extra=_log_extra(ctx))
            raise fault.error from None
        except GatewayError:  # 413: the body grew past the cap while streaming
            server.close_after_response(ctx.request.META)
            raise
        circuits.record_success(base_url)
        return response
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


_traced_send = spans.upstream_attempt(_send)  # the same attempt in a client span (the fallback's too)


def _log_extra(ctx: RequestContext) -> dict[str, str]:
    return {"request_id": ctx.request_id}
