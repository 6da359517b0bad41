"""The spans of a gateway request: one server span per request, one client span per upstream attempt.

The server span continues a valid incoming ``traceparent`` (from any client: it carries
no authority) or starts a trace; it is named ``<method> <route prefix>`` once the route
is known, ends when the response body has been sent, and carries the route, service,
version, application, status and, when the gateway answered itself, its error code.
Each upstream attempt (the version's URL, then the fallback) is its own client span, and
the upstream always receives the gateway's ``traceparent``, never the client's. In an
unsampled trace nobody records either span, so there is no client span: the upstream
gets the server span's id (flags ``00``), as the parent it would have named anyway.
Attribute names follow the OpenTelemetry HTTP conventions plus ``gateway.*``; a key,
token, query string or body never goes in. Everything here is a no-op while tracing is off.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec
from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse, HttpResponseBase

from gateway_core import tracing
from gateway_core.context import RequestContext
from gateway_core.metrics import gateway_error_code
from gateway_core.tracing import SpanKind

P = ParamSpec("P")
# Semantic conventions: a method outside the known set is reported as "_OTHER".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_CLIENT_TRACE_HEADERS = frozenset({"Traceparent", "Tracestate", "traceparent", "tracestate"})


def request_start(request: HttpRequest) -> None:
    """Start the request's server span and make it current (the parent of its upstream and publish spans)."""
    if not tracing.ENABLED:
        return
    meta = request.META
    method = request.method or "GET"
    method = method if method in KNOWN_METHODS else "_OTHER"
    span = tracing.start_server_span(method, meta.get("HTTP_TRACEPARENT"), meta.get("HTTP_TRACESTATE"))
    if span.recording:  # an unsampled span only carries ids: nothing to fill in
        protocol = str(meta.get("SERVER_PROTOCOL", ""))
        span.attributes.update(
            {
                "http.request.method": method,
                "url.scheme": str(meta.get("wsgi.url_scheme", "http")),
                "network.peer.address": str(meta.get("REMOTE_ADDR", "")),
                "network.protocol.version": protocol.removeprefix("HTTP/") if protocol else "1.1",
            }
        )


def request_end(ctx: RequestContext, response: HttpResponseBase) -> None:
    """Fill in what the pipeline learnt and end the server span (a streamed body: when it is closed)."""
    if not tracing.ENABLED:
        return
    span = tracing.current_span()
    if span is None or not span.recording or span.kind is not SpanKind.SERVER:
        return
    attributes = span.attributes
    status = response.status_code
    attributes["url.path"] = ctx.raw_path or ctx.request.path  # never the query string: keys travel there too
    attributes["http.response.status_code"] = status
    if ctx.request_id:
        attributes["gateway.request.id"] = ctx.request_id
    if ctx.client_ip:
        attributes["client.address"] = ctx.client_ip
    route = ctx.route
    if route is not None:
        span.name = f"{attributes['http.request.method']} {route.route_prefix}"
        attributes["http.route"] = route.route_prefix
        attributes["gateway.service"] = route.service_name
    if ctx.version is not None:
        attributes["gateway.service.version"] = ctx.version.version
    if ctx.application is not None:
        attributes["gateway.application.id"] = ctx.application.id
    if ctx.fallback_used:
        attributes["gateway.fallback"] = True
    code = gateway_error_code(ctx.request_id, response) if status >= 400 else None
    if code is not None:
        attributes["gateway.error.code"] = code
        attributes["error.type"] = code
    if status >= 500:  # a 4xx is the client's error, not the server's (HTTP conventions)
        span.fail(code or str(status))
    if response.streaming:
        response._resource_closers.append(span.end)  # type: ignore[attr-defined]  # run by ResponseBody.close
    else:
        span.end()


def recording() -> bool:
    """Return True while this request's server span is being recorded (tracing on, trace sampled).

    Only then are there client spans to make and a server span to end: the request path
    asks this once per step instead of calling into a wrapper that would find nothing to do.
    """
    if not tracing.ENABLED:
        return False
    span = tracing.current_span()
    return span is not None and span.recording


def upstream_attempt(
    send: Callable[Concatenate[RequestContext, str, str, P], HttpResponse],
) -> Callable[Concatenate[RequestContext, str, str, P], HttpResponse]:
    """Wrap ``send(ctx, base_url, path, ...)``, one upstream attempt, in a client span (current meanwhile).

    Called only while :func:`recording`: in an unsampled trace the attempt is sent as it
    is, and the upstream gets the server span's id.
    """

    @functools.wraps(send)
    def traced(ctx: RequestContext, base_url: str, path: str, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        server = tracing.current_span()
        method = ctx.request.method or "GET"
        method = method if method in KNOWN_METHODS else "_OTHER"
        span = tracing.start_span(method, SpanKind.CLIENT, parent=server)
        if span.recording:
            address, port, url_base = _upstream_parts(base_url)
            span.attributes.update(
                {
                    "http.request.method": method,
                    "server.address": address,
                    "server.port": port,
                    "url.full": url_base + path,
                }
            )
            if ctx.fallback_used:
                span.attributes["gateway.fallback"] = True
        tracing.activate(span)
        try:
            response = send(ctx, base_url, path, *args, **kwargs)
        except Exception as exc:
            error = getattr(exc, "error", exc)  # an exchange error carries the GatewayError the client gets
            span.fail(str(getattr(error, "code", type(exc).__name__)))
            span.end()
            raise
        finally:
            tracing.activate(server)
        if span.recording:
            span.attributes["http.response.status_code"] = response.status_code
            if response.status_code >= 400:
                span.fail(str(response.status_code))
            span.end()
        return response

    return traced


def propagate(headers: dict[str, str]) -> None:
    """Replace any client trace context in upstream ``headers`` by the gateway's.

    That of the current span: the attempt's client span, or in an unsampled trace the server span.
    """
    if not tracing.ENABLED:
        return
    span = tracing.current_span()
    if span is None:
        return
    if not headers.keys().isdisjoint(_CLIENT_TRACE_HEADERS):  # a client's trace context, forwarded as sent
        for name in _CLIENT_TRACE_HEADERS:
            headers.pop(name, None)
    headers["traceparent"] = span.traceparent()
    if span.trace_state is not tracing.NO_TRACE_STATE:  # most traces have none
        state = span.tracestate()
        if state:
            headers["tracestate"] = state


@functools.lru_cache(maxsize=1024)
def _upstream_parts(base_url: str) -> tuple[str, int, str]:
    """Return ``(server.address, server.port, url.full without the path)`` of an upstream base URL.

    The URL loses any ``user:password@`` (and a query, which a base URL has no use for).
    """
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    shown = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        shown = f"{shown}:{parts.port}"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return host, port, f"{parts.scheme}://{shown}{parts.path.rstrip('/')}"
