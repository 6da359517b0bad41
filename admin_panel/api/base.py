"""What every admin API view shares: staff-only access and the documented error answers."""

from __future__ import annotations

from typing import TypeVar

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from admin_panel.serializers import ErrorSerializer

T = TypeVar("T")
ERROR = OpenApiResponse(ErrorSerializer, description="Error in the gateway's JSON error shape.")
# Answers any admin API operation may give besides its success (401/403/429 come from auth).
COMMON_ERRORS = {401: ERROR, 403: ERROR, 429: ERROR}
WITH_LOOKUP = {**COMMON_ERRORS, 404: ERROR}
WITH_INPUT = {**WITH_LOOKUP, 400: ERROR}


class AdminAPIView(APIView):
    """An admin API endpoint: staff only (settings.REST_FRAMEWORK), JSON in and out."""


def found(value: T | None, what: str) -> T:
    """Return ``value``; raise a JSON 404 naming ``what`` when it is None."""
    if value is None:
        raise NotFound(f"No such {what}.")
    return value


def created(request: Request, data: object, view_name: str, **kwargs: object) -> Response:
    """Answer 201 with ``data`` and the new resource's URL in ``Location``."""
    response = Response(data, status=status.HTTP_201_CREATED)
    response["Location"] = request.build_absolute_uri(reverse(f"admin_api:{view_name}", kwargs=kwargs))
    return response
