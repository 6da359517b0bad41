"""What every admin API view shares: staff and model-permission checks, the documented error answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission
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


# The Django model permission each method needs on a view's ``permission_model``.
METHOD_ACTIONS: Mapping[str, str] = {
    "GET": "view",
    "HEAD": "view",
    "OPTIONS": "view",
    "POST": "add",
    "PUT": "change",
    "PATCH": "change",
    "DELETE": "delete",
}


class ModelPermissions(BasePermission):
    """Staff only (anonymous 401, non-staff 403), then the Django permissions the view needs.

    A view names them per method in ``required_permissions`` (``{"POST": ("app.add_x",)}``),
    or names one ``permission_model`` (``"routing.serviceconfig"``) whose view / add /
    change / delete permission each method needs (``METHOD_ACTIONS``). A staff user
    lacking one gets 403; superusers hold every permission.
    """

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_staff):
            return False
        return user.has_perms(permissions_needed(view, request.method or "GET"))


def permissions_needed(view: APIView, method: str) -> tuple[str, ...]:
    """Return the permissions ``method`` on ``view`` needs (() for a view that names none)."""
    method = method.upper()
    explicit = getattr(view, "required_permissions", None)
    if explicit is not None:
        lookup = "GET" if method in ("HEAD", "OPTIONS") else method
        return tuple(explicit.get(lookup, ()))
    model = getattr(view, "permission_model", None)
    if model is None or method not in METHOD_ACTIONS:
        return ()
    app_label, model_name = model.split(".")
    return (f"{app_label}.{METHOD_ACTIONS[method]}_{model_name}",)


class AdminAPIView(APIView):
    """An admin API endpoint: staff with the model permissions it names, JSON in and out."""

    permission_classes = [ModelPermissions]
    permission_model: str | None = None
    required_permissions: Mapping[str, tuple[str, ...]] | None = None


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
