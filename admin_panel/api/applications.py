"""/admin/access/applications[/{id}]: list, create, read, change and delete applications."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from access.models import Application
from access.selectors import application_get, application_list
from access.services import application_create, application_delete, application_update
from admin_panel.api.base import COMMON_ERRORS, WITH_INPUT, WITH_LOOKUP, AdminAPIView, created, found
from admin_panel.serializers import ApplicationSerializer

TAGS = ["access"]
APPLICATION_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Application id.")


def application_or_404(application_id: str) -> Application:
    """Return the application ``application_id``; JSON 404 when unknown (or not a UUID)."""
    return found(application_get(application_id), "application")


class ApplicationListView(AdminAPIView):
    permission_model = "access.application"

    @extend_schema(tags=TAGS, responses={200: ApplicationSerializer(many=True), **COMMON_ERRORS})
    def get(self, request: Request) -> Response:
        """List every application."""
        return Response(ApplicationSerializer(application_list(), many=True).data)

    @extend_schema(
        tags=TAGS,
        request=ApplicationSerializer,
        responses={201: ApplicationSerializer, 400: WITH_INPUT[400], **COMMON_ERRORS},
    )
    def post(self, request: Request) -> Response:
        """Create an application."""
        serializer = ApplicationSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        application = application_create(actor=request.user, fields=serializer.validated_data)
        return created(request, ApplicationSerializer(application).data, "application", id=application.id)


@extend_schema(parameters=[APPLICATION_ID])
class ApplicationDetailView(AdminAPIView):
    permission_model = "access.application"

    @extend_schema(tags=TAGS, responses={200: ApplicationSerializer, **WITH_LOOKUP})
    def get(self, request: Request, id: str) -> Response:
        """Show one application."""
        return Response(ApplicationSerializer(application_or_404(id)).data)

    @extend_schema(tags=TAGS, request=ApplicationSerializer, responses={200: ApplicationSerializer, **WITH_INPUT})
    def put(self, request: Request, id: str) -> Response:
        """Replace an application's fields (fields left out keep their value)."""
        return self._update(request, id, partial=False)

    @extend_schema(
        tags=TAGS, request=ApplicationSerializer(partial=True), responses={200: ApplicationSerializer, **WITH_INPUT}
    )
    def patch(self, request: Request, id: str) -> Response:
        """Change some fields of an application."""
        return self._update(request, id, partial=True)

    @extend_schema(tags=TAGS, responses={204: None, **WITH_LOOKUP})
    def delete(self, request: Request, id: str) -> Response:
        """Delete an application with its whitelist entries and API keys."""
        application_delete(application=application_or_404(id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request: Request, application_id: str, *, partial: bool) -> Response:
        application = application_or_404(application_id)
        serializer = ApplicationSerializer(application, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        application_update(application=application, actor=request.user, fields=serializer.validated_data)
        return Response(ApplicationSerializer(application).data)
