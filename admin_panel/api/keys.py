"""/admin/access/applications/{id}/api-keys[/{key_id}]: list, issue and revoke API keys.

The plaintext key is in the answer to the POST that creates it and nowhere else;
lists never carry a key or a hash. DELETE revokes (``is_active=false``): the row is
kept for audit, and the key stops working everywhere on the next config reload.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from access.selectors import api_key_get, api_key_list
from access.services import api_key_issue, api_key_withdraw
from admin_panel.api.applications import APPLICATION_ID, application_or_404
from admin_panel.api.base import WITH_INPUT, WITH_LOOKUP, AdminAPIView, found
from admin_panel.serializers import ApiKeyCreatedSerializer, ApiKeyCreateSerializer, ApiKeySerializer

TAGS = ["access"]
KEY_ID = OpenApiParameter("key_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="API key id.")


@extend_schema(parameters=[APPLICATION_ID])
class ApiKeyListView(AdminAPIView):
    required_permissions = {"GET": ("access.view_apikey",), "POST": ("access.add_apikey",)}

    @extend_schema(tags=TAGS, responses={200: ApiKeySerializer(many=True), **WITH_LOOKUP})
    def get(self, request: Request, id: str) -> Response:
        """List an application's keys (metadata only)."""
        return Response(ApiKeySerializer(api_key_list(application_or_404(id)), many=True).data)

    @extend_schema(tags=TAGS, request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer, **WITH_INPUT})
    def post(self, request: Request, id: str) -> Response:
        """Issue a key; the answer holds the plaintext ``key``, shown this once only."""
        application = application_or_404(id)
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, plaintext = api_key_issue(application=application, actor=request.user, **serializer.validated_data)
        key.key = plaintext  # rendered by ApiKeyCreatedSerializer only, never stored
        response = Response(ApiKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response


@extend_schema(parameters=[APPLICATION_ID, KEY_ID])
class ApiKeyDetailView(AdminAPIView):
    required_permissions = {"DELETE": ("access.change_apikey",)}  # a revoke changes the key

    @extend_schema(tags=TAGS, responses={200: ApiKeySerializer, **WITH_LOOKUP})
    def delete(self, request: Request, id: str, key_id: str) -> Response:
        """Revoke a key (kept, with ``is_active=false``); answer its metadata."""
        key = found(api_key_get(application_or_404(id), key_id), "API key")
        return Response(ApiKeySerializer(api_key_withdraw(key=key, actor=request.user)).data)
