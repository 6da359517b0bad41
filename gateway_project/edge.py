"""The edge checks and JSON errors for the Django-served paths of port 4200 (SPEC §4.2).

``/api/v1`` runs ``routing.edge.check_edge`` as a pipeline step; everything else on the
port (ops endpoints, the admin API, the task status view, unknown paths) passes this
middleware first, so a bad ``Host``, ``TRACE``/``CONNECT`` or a WebSocket upgrade gets
the same JSON refusal wherever it is sent, and an unknown path the JSON 404.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from gateway_core.errors import ErrorCode, error_response
from gateway_core.request_id import request_id_for
from gateway_project import ops
from routing.edge import edge_error

# Orchestrators probe a pod by its address: these answer whatever the Host, so they are
# served here, before Django's own Host validation (CommonMiddleware) could refuse them.
PROBES = {"/healthz": ops.healthz, "/readyz": ops.readyz}


class EdgeMiddleware:
    """Refuse what ``routing.edge`` refuses, before any other middleware reads the request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        error = edge_error(request)
        if error is not None:
            return error.to_response(request_id=_request_id(request))
        probe = PROBES.get(request.path_info)
        if probe is not None:
            return probe(request)
        return self.get_response(request)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler404`` of port 4200: the JSON ``route_not_found`` an unrouted ``/api/v1`` path gets."""
    return error_response(404, ErrorCode.ROUTE_NOT_FOUND, "No route matches this path.", _request_id(request))


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500`` of port 4200: the JSON ``internal_error``, never a page or a trace."""
    return error_response(500, ErrorCode.INTERNAL_ERROR, "Internal gateway error.", _request_id(request))


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler400`` of port 4200 (a ``DisallowedHost`` or ``SuspiciousOperation`` raised later)."""
    return error_response(400, ErrorCode.BAD_REQUEST, "The request is malformed.", _request_id(request))


def _request_id(request: HttpRequest) -> str:
    return request_id_for(request.META.get("HTTP_X_REQUEST_ID"))
