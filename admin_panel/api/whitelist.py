"""/admin/access/applications/{id}/whitelist[/{entry_id}]: an application's endpoint whitelist."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from access.models import EndpointWhitelist
from access.selectors import whitelist_entry_get, whitelist_entry_list
from access.services import whitelist_entry_create, whitelist_entry_delete, whitelist_entry_update
from admin_panel.api.applications import APPLICATION_ID, application_or_404
from admin_panel.api.base import WITH_INPUT, WITH_LOOKUP, AdminAPIView, created, found
from admin_panel.serializers import WhitelistEntrySerializer

TAGS = ["access"]
ENTRY_ID = OpenApiParameter("entry_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Entry id.")


def _entry(application_id: str, entry_id: str) -> EndpointWhitelist:
    return found(whitelist_entry_get(application_or_404(application_id), entry_id), "whitelist entry")


@extend_schema(parameters=[APPLICATION_ID])
class WhitelistListView(AdminAPIView):
    permission_model = "access.endpointwhitelist"

    @extend_schema(tags=TAGS, responses={200: WhitelistEntrySerializer(many=True), **WITH_LOOKUP})
    def get(self, request: Request, id: str) -> Response:
        """List an application's whitelist entries."""
        entries = whitelist_entry_list(application_or_404(id))
        return Response(WhitelistEntrySerializer(entries, many=True).data)

    @extend_schema(tags=TAGS, request=WhitelistEntrySerializer, responses={201: WhitelistEntrySerializer, **WITH_INPUT})
    def post(self, request: Request, id: str) -> Response:
        """Add a whitelist entry to an application."""
        application = application_or_404(id)
        serializer = WhitelistEntrySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        entry = whitelist_entry_create(application=application, actor=request.user, fields=serializer.validated_data)
        data = WhitelistEntrySerializer(entry).data
        return created(request, data, "whitelist-entry", id=application.id, entry_id=entry.id)


@extend_schema(parameters=[APPLICATION_ID, ENTRY_ID])
class WhitelistDetailView(AdminAPIView):
    permission_model = "access.endpointwhitelist"

    @extend_schema(tags=TAGS, responses={200: WhitelistEntrySerializer, **WITH_LOOKUP})
    def get(self, request: Request, id: str, entry_id: str) -> Response:
        """Show one whitelist entry."""
        return Response(WhitelistEntrySerializer(_entry(id, entry_id)).data)

    @extend_schema(tags=TAGS, request=WhitelistEntrySerializer, responses={200: WhitelistEntrySerializer, **WITH_INPUT})
    def put(self, request: Request, id: str, entry_id: str) -> Response:
        """Replace an entry's fields (fields left out keep their value)."""
        return self._update(request, id, entry_id, partial=False)

    @extend_schema(
        tags=TAGS,
        request=WhitelistEntrySerializer(partial=True),
        responses={200: WhitelistEntrySerializer, **WITH_INPUT},
    )
    def patch(self, request: Request, id: str, entry_id: str) -> Response:
        """Change some fields of an entry."""
        return self._update(request, id, entry_id, partial=True)

    @extend_schema(tags=TAGS, responses={204: None, **WITH_LOOKUP})
    def delete(self, request: Request, id: str, entry_id: str) -> Response:
        """Delete a whitelist entry."""
        whitelist_entry_delete(entry=_entry(id, entry_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request: Request, application_id: str, entry_id: str, *, partial: bool) -> Response:
        entry = _entry(application_id, entry_id)
        serializer = WhitelistEntrySerializer(entry, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        whitelist_entry_update(entry=entry, actor=request.user, fields=serializer.validated_data)
        return Response(WhitelistEntrySerializer(entry).data)
