"""The admin API's one exception handler: every error in the gateway's JSON shape.

``{"error": {"code", "message", "request_id"}}`` as on the request path (SPEC §4), plus
``fields`` (field name → messages) for invalid input. A model ``ValidationError``
raised by a service becomes a 400 with its field errors, so the models stay the one
source of truth. An unexpected exception is logged and answered as a JSON 500 without
details.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

from gateway_core.request_id import request_id_for

logger = logging.getLogger("gateway.admin_api")


def exception_handler(exc: Exception, context: Mapping[str, object]) -> Response:
    """Render ``exc`` as the gateway's JSON error (DRF's EXCEPTION_HANDLER)."""
    request = context.get("request")
    request_id = request_id_for(request.META.get("HTTP_X_REQUEST_ID") if isinstance(request, Request) else None)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("admin API error", extra={"request_id": request_id})
        return Response(
            {"error": {"code": "internal_error", "message": "Internal error.", "request_id": request_id}},
            status=500,
        )
    if isinstance(exc, exceptions.ValidationError):
        body = {"code": "invalid", "message": "Invalid input.", "request_id": request_id}
        body["fields"] = _field_errors(exc.detail)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        body = {"code": getattr(detail, "code", None) or "error", "message": str(detail), "request_id": request_id}
    response.data = {"error": body}
    response["X-Request-ID"] = request_id
    return response


def _field_errors(detail: object, prefix: str = "") -> dict[str, list[str]]:
    """Flatten DRF's nested error detail into ``{"field" | "list_field[2]": [messages]}``."""
    if isinstance(detail, Mapping):
        errors: dict[str, list[str]] = {}
        for name, value in detail.items():
            label = "non_field_errors" if name == NON_FIELD_ERRORS else str(name)
            errors.update(_field_errors(value, f"{prefix}.{label}" if prefix else label))
        return errors
    if isinstance(detail, list):
        if all(not isinstance(item, (list, Mapping)) for item in detail):
            return {prefix or "non_field_errors": [str(item) for item in detail]}
        errors = {}
        for index, item in enumerate(detail):
            if item:
                errors.update(_field_errors(item, f"{prefix}[{index}]"))
        return errors
    return {prefix or "non_field_errors": [str(detail)]}
