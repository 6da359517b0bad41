"""A database that refuses or hangs is a 503 ``database_unavailable``, never a 500 (admin API, admin UI, ops).

The pool (``gateway_project.database``) turns "no connection within
``GATEWAY_DB_POOL_TIMEOUT_S``" and "no answer within ``GATEWAY_DB_TIMEOUT_S``" into
Django's ``OperationalError``; a refused or dropped connection is one too. Those are
the database being unavailable, not a bug, so they get the gateway's JSON error with
status 503 and ``Retry-After``, and a one-line warning naming the error type only
(its text may quote the server's address).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.response import Response

from gateway_core.request_id import request_id_for

logger = logging.getLogger("gateway.database")

UNAVAILABLE_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER_S = 5


def _body(request_id: str) -> dict[str, object]:
    message = "The database is not available; retry shortly."
    return {"error": {"code": "database_unavailable", "message": message, "request_id": request_id}}


def admin_api_exception_handler(exc: Exception, context: Mapping[str, object]) -> Response:
    """DRF's EXCEPTION_HANDLER: 503 for an unavailable database, else the admin API's own handler."""
    from admin_panel.api.errors import exception_handler

    if not isinstance(exc, UNAVAILABLE_ERRORS):
        return exception_handler(exc, context)
    request = context.get("request")
    meta = getattr(request, "META", {})
    request_id = request_id_for(meta.get("HTTP_X_REQUEST_ID"))
    logger.warning("database unavailable", extra={"request_id": request_id, "reason": type(exc).__name__})
    response = Response(_body(request_id), status=503)
    response["Retry-After"] = str(RETRY_AFTER_S)
    response["X-Request-ID"] = request_id
    return response


class DatabaseUnavailableMiddleware:
    """Answer 503 ``database_unavailable`` when a view fails because the database is unavailable."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not isinstance(exc, UNAVAILABLE_ERRORS):
            return None
        request_id = request_id_for(request.META.get("HTTP_X_REQUEST_ID"))
        logger.warning("database unavailable", extra={"request_id": request_id, "reason": type(exc).__name__})
        response = JsonResponse(_body(request_id), status=503)
        response["Retry-After"] = str(RETRY_AFTER_S)
        response["X-Request-ID"] = request_id
        return response
