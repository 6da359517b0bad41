"""/admin/routing/services/{service_name}/versions[/{version}]: a service's versions."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from admin_panel.api.base import WITH_INPUT, WITH_LOOKUP, AdminAPIView, created, found
from admin_panel.serializers import ServiceVersionSerializer
from routing.models import ServiceConfig, ServiceVersion
from routing.selectors import service_get, service_version_get, service_version_list
from routing.services import service_version_create, service_version_delete, service_version_update

TAGS = ["routing"]


def _service(service_name: str) -> ServiceConfig:
    return found(service_get(service_name), "service")


def _version(service_name: str, version: str) -> ServiceVersion:
    return found(service_version_get(_service(service_name), version), "version")


class VersionListView(AdminAPIView):
    permission_model = "routing.serviceversion"

    @extend_schema(tags=TAGS, responses={200: ServiceVersionSerializer(many=True), **WITH_LOOKUP})
    def get(self, request: Request, service_name: str) -> Response:
        """List the versions of a service."""
        versions = service_version_list(_service(service_name))
        return Response(ServiceVersionSerializer(versions, many=True).data)

    @extend_schema(tags=TAGS, request=ServiceVersionSerializer, responses={201: ServiceVersionSerializer, **WITH_INPUT})
    def post(self, request: Request, service_name: str) -> Response:
        """Add a version to a service."""
        service = _service(service_name)
        serializer = ServiceVersionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        version = service_version_create(service=service, actor=request.user, fields=serializer.validated_data)
        return created(
            request,
            ServiceVersionSerializer(version).data,
            "version",
            service_name=service.service_name,
            version=version.version,
        )


class VersionDetailView(AdminAPIView):
    permission_model = "routing.serviceversion"

    @extend_schema(tags=TAGS, responses={200: ServiceVersionSerializer, **WITH_LOOKUP})
    def get(self, request: Request, service_name: str, version: str) -> Response:
        """Show one version."""
        return Response(ServiceVersionSerializer(_version(service_name, version)).data)

    @extend_schema(tags=TAGS, request=ServiceVersionSerializer, responses={200: ServiceVersionSerializer, **WITH_INPUT})
    def put(self, request: Request, service_name: str, version: str) -> Response:
        """Replace a version's fields (fields left out keep their value)."""
        return self._update(request, service_name, version, partial=False)

    @extend_schema(
        tags=TAGS,
        request=ServiceVersionSerializer(partial=True),
        responses={200: ServiceVersionSerializer, **WITH_INPUT},
    )
    def patch(self, request: Request, service_name: str, version: str) -> Response:
        """Change some fields of a version."""
        return self._update(request, service_name, version, partial=True)

    @extend_schema(tags=TAGS, responses={204: None, **WITH_LOOKUP})
    def delete(self, request: Request, service_name: str, version: str) -> Response:
        """Delete a version."""
        service_version_delete(version=_version(service_name, version), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request: Request, service_name: str, version: str, *, partial: bool) -> Response:
        row = _version(service_name, version)
        serializer = ServiceVersionSerializer(row, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        service_version_update(version=row, actor=request.user, fields=serializer.validated_data)
        return Response(ServiceVersionSerializer(row).data)
