"""Edge checks every request on port 4200 passes first: Host, method, protocol upgrades (SPEC §4.2).

- ``Host`` must match ``ALLOWED_HOSTS`` (Django's rules) on every path but ``/healthz``
  and ``/readyz`` (orchestrators probe a pod by its address): 400 ``bad_host``. The
  gateway puts the client's ``Host`` into ``X-Forwarded-Host`` upstream, where it ends in
  password-reset links and cache keys, so an unchecked one is a poisoning vector.
- ``TRACE`` and ``CONNECT`` are never forwarded: 405 ``method_not_allowed``. An upstream
  that echoes ``TRACE`` would hand back the ``X-Service-Key`` the gateway added.
- A WebSocket upgrade is refused by the gateway itself, 501 ``upgrade_not_supported``:
  the gateway does not tunnel upgraded connections, and forwarding the request as a
  plain GET would lose the upgrade on the way back. Other upgrade offers (``h2c``) are
  ignored, as RFC 9110 §7.8 lets a server do: the request is served over HTTP/1.1.

The same checks run for the Django-served paths of port 4200 through
``gateway_project.edge.EdgeMiddleware``.
"""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.signals import setting_changed
from django.http import HttpRequest
from django.http.request import split_domain_port, validate_host

from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError

PROBE_PATHS = frozenset({"/healthz", "/readyz"})
NEVER_FORWARDED_METHODS = frozenset({"TRACE", "CONNECT"})
ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


def host_allowed(request: HttpRequest) -> bool:
    """Return True when the request's ``Host`` matches ``ALLOWED_HOSTS`` (Django's rules)."""
    host = request.META.get("HTTP_HOST")
    if host is None:  # an HTTP/1.0 request without Host: Django derives one from the server
        try:
            request.get_host()
        except DisallowedHost:
            return False
        return True
    return _host_allowed(str(host))


@lru_cache(maxsize=1024)
def _host_allowed(host: str) -> bool:
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def _forget_hosts(*, setting: str, **kwargs: object) -> None:
    if setting in ("ALLOWED_HOSTS", "DEBUG"):
        _host_allowed.cache_clear()


setting_changed.connect(_forget_hosts)


def edge_error(request: HttpRequest) -> GatewayError | None:
    """Return the refusal of an edge check for ``request``, or None when it passes."""
    if request.path_info not in PROBE_PATHS and not host_allowed(request):
        return GatewayError(400, ErrorCode.BAD_HOST, "The Host header does not name this gateway.")
    if request.method in NEVER_FORWARDED_METHODS:
        return GatewayError(405, ErrorCode.METHOD_NOT_ALLOWED, "TRACE and CONNECT are not accepted.", {"Allow": ALLOW})
    upgrade = request.META.get("HTTP_UPGRADE")
    if upgrade and "websocket" in str(upgrade).lower():
        return GatewayError(501, ErrorCode.UPGRADE_NOT_SUPPORTED, "The gateway does not proxy WebSocket connections.")
    return None


def check_edge(ctx: RequestContext) -> None:
    """Pipeline step: 400 ``bad_host``, 405 ``method_not_allowed``, 501 ``upgrade_not_supported``."""
    error = edge_error(ctx.request)
    if error is not None:
        raise error
