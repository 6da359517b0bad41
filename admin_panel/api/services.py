"""/admin/routing/services[/{service_name}]: list, create, read, change and delete services."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from admin_panel.api.base import COMMON_ERRORS, WITH_INPUT, WITH_LOOKUP, AdminAPIView, created, found
from admin_panel.serializers import ServiceSerializer
from routing.selectors import service_get, service_list
from routing.services import service_create, service_delete, service_update

TAGS = ["routing"]


class ServiceListView(AdminAPIView):
    permission_model = "routing.serviceconfig"

    @extend_schema(tags=TAGS, responses={200: ServiceSerializer(many=True), **COMMON_ERRORS})
    def get(self, request: Request) -> Response:
        """List every service."""
        return Response(ServiceSerializer(service_list(), many=True).data)

    @extend_schema(
        tags=TAGS, request=ServiceSerializer, responses={201: ServiceSerializer, 400: WITH_INPUT[400], **COMMON_ERRORS}
    )
    def post(self, request: Request) -> Response:
        """Create a service."""
        serializer = ServiceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        service = service_create(actor=request.user, fields=serializer.validated_data)
        return created(request, ServiceSerializer(service).data, "service", service_name=service.service_name)


class ServiceDetailView(AdminAPIView):
    permission_model = "routing.serviceconfig"

    @extend_schema(tags=TAGS, responses={200: ServiceSerializer, **WITH_LOOKUP})
    def get(self, request: Request, service_name: str) -> Response:
        """Show one service."""
        return Response(ServiceSerializer(found(service_get(service_name), "service")).data)

    @extend_schema(tags=TAGS, request=ServiceSerializer, responses={200: ServiceSerializer, **WITH_INPUT})
    def put(self, request: Request, service_name: str) -> Response:
        """Replace a service's fields (fields left out keep their value)."""
        return self._update(request, service_name, partial=False)

    @extend_schema(tags=TAGS, request=ServiceSerializer(partial=True), responses={200: ServiceSerializer, **WITH_INPUT})
    def patch(self, request: Request, service_name: str) -> Response:
        """Change some fields of a service."""
        return self._update(request, service_name, partial=True)

    @extend_schema(tags=TAGS, responses={204: None, **WITH_LOOKUP})
    def delete(self, request: Request, service_name: str) -> Response:
        """Delete a service and its versions."""
        service_delete(service=found(service_get(service_name), "service"), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request: Request, service_name: str, *, partial: bool) -> Response:
        service = found(service_get(service_name), "service")
        serializer = ServiceSerializer(service, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        service_update(service=service, actor=request.user, fields=serializer.validated_data)
        return Response(ServiceSerializer(service).data)
