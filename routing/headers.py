"""The header policy: which headers cross the gateway, in each direction, and which it sets (SPEC §4.7).

One module decides it all, in the spirit of Envoy's ``mutateRequestHeaders``: first
every header the gateway owns or that describes a hop is removed, then the gateway adds
its own. Both directions share the hop-by-hop rule (``Connection`` and every header it
names, ``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``,
``Upgrade``).

Towards the upstream, on top of the hop-by-hop headers:

- always dropped: ``Host`` (the upstream's is set), ``X-API-Key`` (the gateway's
  credential, never the upstream's), ``X-Service-Key``, ``X-Request-ID`` (re-set),
  ``Expect`` (answered by the gateway), ``Content-Length`` (re-added as is), and every
  ``X-Consumer-*``, ``X-Gateway-*`` and ``X-Authenticated-*`` header: a client cannot
  speak for the gateway;
- dropped from a peer outside ``GATEWAY_TRUSTED_PROXIES``: the proxy-identity headers
  ``Forwarded``, every ``X-Forwarded-*``, ``X-Real-IP``, ``X-Client-IP``,
  ``True-Client-IP``, ``X-Original-URL`` and ``X-Rewrite-URL`` (the last two let a client
  rewrite the path on some upstream frameworks, past the gateway's path rules);
- added: ``Host``, ``X-Forwarded-For`` (appended), ``X-Forwarded-Proto``,
  ``X-Forwarded-Host``, ``X-Request-ID``, ``X-Consumer-ID`` / ``X-Consumer-Name`` for an
  identified caller, ``X-Authenticated-User`` / ``X-Authenticated-Scope`` for a bearer
  token's user, ``X-Service-Key`` when the service has one.

Towards the client: the hop-by-hop headers, ``X-API-Key``, ``X-Service-Key`` and the
upstream's ``Date`` and ``Server`` (gunicorn writes its own) are dropped; a
``Location`` or ``Content-Location`` pointing at the upstream is rewritten to the
gateway's URL for the same resource.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Final
from urllib.parse import urlsplit

from gateway_core.client_ip import is_trusted_proxy
from gateway_core.conf import GatewayConfig
from gateway_core.context import RequestContext

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Request headers the gateway re-sets, answers itself or must never pass on.
REQUEST_DROP: Final = frozenset({"host", "x-api-key", "x-service-key", "x-request-id", "expect", "content-length"})
# Headers only the gateway may set: a client sending them would impersonate it.
GATEWAY_HEADER_PREFIXES: Final = ("x-consumer-", "x-gateway-", "x-authenticated-")
# Who the client is and where it asked to go, as told by a proxy in front: believed only from a trusted one.
PROXY_IDENTITY: Final = frozenset(
    {"forwarded", "x-real-ip", "x-client-ip", "true-client-ip", "x-original-url", "x-rewrite-url"}
)
PROXY_IDENTITY_PREFIXES: Final = ("x-forwarded-",)
# The gateway adds these itself; from a trusted proxy its values feed the gateway's own.
FORWARDED_BY_GATEWAY: Final = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
RESPONSE_DROP: Final = frozenset({"x-api-key", "x-service-key", "date", "server"})
# A chunked answer is passed on de-chunked: a Content-Length beside it would not describe it.
RESPONSE_DROP_CHUNKED: Final = RESPONSE_DROP | {"content-length"}
LOCATION_HEADERS: Final = frozenset({"location", "content-location"})
DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def filter_hop_by_hop(
    headers: Iterable[tuple[str, str]],
    drop: frozenset[str] = frozenset(),
    drop_prefixes: tuple[str, ...] = (),
) -> list[tuple[str, str]]:
    """Return the end-to-end headers of ``headers``, in order, duplicates kept.

    Removes the hop-by-hop headers, every header ``Connection`` names, the lower-case
    names in ``drop`` and the names starting with ``drop_prefixes``.
    """
    headers = list(headers)
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(","))
    return [
        (name, value)
        for name, value in headers
        if (lowered := name.lower()) not in named and not _always_dropped(lowered, drop, drop_prefixes)
    ]


def _always_dropped(lowered: str, drop: frozenset[str], drop_prefixes: tuple[str, ...]) -> bool:
    return (
        lowered in HOP_BY_HOP
        or lowered.startswith("proxy-")
        or lowered in drop
        or bool(drop_prefixes and lowered.startswith(drop_prefixes))
    )


@lru_cache(maxsize=512)
def _header_name(meta_key: str) -> str:
    return meta_key.replace("_", "-").title()


def client_headers(meta: Mapping[str, object]) -> list[tuple[str, str]]:
    """Return the request headers of a WSGI environ as ``(Name, value)`` pairs."""
    headers = []
    for key, value in meta.items():
        if key.startswith("HTTP_"):
            headers.append((_header_name(key[5:]), str(value)))
        elif key == "CONTENT_TYPE" and value:
            headers.append(("Content-Type", str(value)))
        elif key == "CONTENT_LENGTH" and value:
            headers.append(("Content-Length", str(value)))
    return headers


@lru_cache(maxsize=2048)
def forwarded_name(meta_key: str, trusted_peer: bool) -> str | None:
    """Return the header name of an ``HTTP_*`` environ key when it may go upstream as sent, else None."""
    name = _header_name(meta_key[5:])
    lowered = name.lower()
    if _always_dropped(lowered, REQUEST_DROP, GATEWAY_HEADER_PREFIXES) or lowered in FORWARDED_BY_GATEWAY:
        return None
    if not trusted_peer and (lowered in PROXY_IDENTITY or lowered.startswith(PROXY_IDENTITY_PREFIXES)):
        return None
    return name


def upstream_request_headers(ctx: RequestContext, netloc: str, config: GatewayConfig) -> dict[str, str]:
    """Return the headers to send upstream, in one pass over the environ (SPEC §4.7)."""
    meta = ctx.request.META
    peer = str(meta.get("REMOTE_ADDR", ""))
    trusted = is_trusted_proxy(peer, config.trusted_proxies)
    connection = meta.get("HTTP_CONNECTION")
    named = {token.strip().lower() for token in connection.split(",")} if connection else None
    headers: dict[str, str] = {}
    for key, value in meta.items():
        if key.startswith("HTTP_"):
            name = forwarded_name(key, trusted)
            if name is not None and (named is None or name.lower() not in named):
                headers[name] = value
    content_type = meta.get("CONTENT_TYPE")
    if content_type and (named is None or "content-type" not in named):
        headers["Content-Type"] = content_type
    headers["Host"] = netloc
    prior = trusted and meta.get("HTTP_X_FORWARDED_FOR")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = client_scheme(meta, trusted)
    forwarded_host = (trusted and meta.get("HTTP_X_FORWARDED_HOST")) or meta.get("HTTP_HOST")
    if forwarded_host:
        headers["X-Forwarded-Host"] = str(forwarded_host)
    headers["X-Request-ID"] = ctx.request_id
    application = ctx.application
    if application is not None:
        headers["X-Consumer-ID"] = application.id
        headers["X-Consumer-Name"] = wire_text(application.name)
    if ctx.user is not None:
        headers["X-Authenticated-User"] = wire_text(ctx.user)
        headers["X-Authenticated-Scope"] = wire_text(" ".join(sorted(ctx.scopes)))
    if ctx.route is not None and ctx.route.service_key:
        headers["X-Service-Key"] = ctx.route.service_key
    length = meta.get("CONTENT_LENGTH")
    if length:
        headers["Content-Length"] = str(length)
    return headers


def client_scheme(meta: Mapping[str, object], trusted_peer: bool) -> str:
    """Return the scheme the client used: a trusted proxy's ``X-Forwarded-Proto``, else the socket's."""
    return str((trusted_peer and meta.get("HTTP_X_FORWARDED_PROTO")) or meta.get("wsgi.url_scheme", "http"))


def wire_text(value: str) -> str:
    """Return ``value`` as its UTF-8 bytes held in a Latin-1 string (how header values travel)."""
    return value if value.isascii() else value.encode("utf-8").decode("latin-1")


# --- Answers --------------------------------------------------------------------------------


def client_answer_headers(headers: list[tuple[str, str]], *, chunked: bool) -> list[tuple[str, str]]:
    """Return the upstream answer's headers that go on to the client."""
    return filter_hop_by_hop(headers, RESPONSE_DROP_CHUNKED if chunked else RESPONSE_DROP)


class LocationRewrite:
    """Rewrites a ``Location`` that points at the chosen upstream to the gateway's own URL.

    ``upstream_base`` is what the gateway put in front of the rest of the path
    (``scheme://host:port`` + the version's path + ``upstream_prefix``); ``gateway_base``
    is the client's view of the same place (its scheme and ``Host`` + ``route_prefix``).
    A URL under ``upstream_base`` (on a segment boundary, default ports equal to none)
    becomes the same rest under ``gateway_base``, as nginx's ``proxy_redirect default``;
    anything else is returned unchanged.
    """

    __slots__ = ("gateway_base", "origin", "path")

    def __init__(self, upstream_base: str, gateway_base: str) -> None:
        parts = urlsplit(upstream_base)
        self.origin = _origin(parts.scheme, parts.hostname, parts.port)
        self.path = parts.path.rstrip("/")
        self.gateway_base = gateway_base.rstrip("/")

    def __call__(self, value: str) -> str:
        try:
            parts = urlsplit(value)
            origin = _origin(parts.scheme, parts.hostname, parts.port)
        except ValueError:  # an unparsable URL (bad port, bad IPv6 literal) is passed on as it is
            return value
        if origin is None or origin != self.origin:
            return value
        path = parts.path
        if self.path and not (path == self.path or path.startswith(self.path + "/")):
            return value
        rest = path[len(self.path) :]
        tail = (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")
        return self.gateway_base + rest + tail


def _origin(scheme: str, host: str | None, port: int | None) -> tuple[str, str, int] | None:
    scheme = scheme.lower()
    if not host or scheme not in DEFAULT_PORTS:
        return None
    return scheme, host.lower(), port or DEFAULT_PORTS[scheme]


def rewrite_location(ctx: RequestContext, base_url: str, config: GatewayConfig, value: str) -> str:
    """Return ``value`` (a ``Location`` of an answer from ``base_url``) as the client must see it.

    Called only for answers that carry one, so the rule costs the other requests nothing.
    """
    meta = ctx.request.META
    host = meta.get("HTTP_HOST")
    route = ctx.route
    if not host or route is None:
        return value
    trusted = is_trusted_proxy(str(meta.get("REMOTE_ADDR", "")), config.trusted_proxies)
    gateway_host = (trusted and meta.get("HTTP_X_FORWARDED_HOST")) or host
    gateway_base = f"{client_scheme(meta, trusted)}://{gateway_host}{route.route_prefix}"
    return _location_rule(base_url.rstrip("/") + route.upstream_prefix, gateway_base)(value)


@lru_cache(maxsize=1024)
def _location_rule(upstream_base: str, gateway_base: str) -> LocationRewrite:
    return LocationRewrite(upstream_base, gateway_base)
