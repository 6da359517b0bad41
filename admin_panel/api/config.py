"""/admin/config/export and /admin/config/import: the whole config as one document."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from admin_panel.api.base import COMMON_ERRORS, ERROR, AdminAPIView
from admin_panel.config_io import ConfigInvalid, config_export, config_import
from admin_panel.serializers import ConfigDocumentSerializer, ImportResultSerializer
from gateway_core.request_id import request_id_for

TAGS = ["config"]
DRY_RUN_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}
DRY_RUN = OpenApiParameter(
    "dry_run", OpenApiTypes.BOOL, OpenApiParameter.QUERY, description="1: only show the diff, change nothing."
)


class ConfigExportView(AdminAPIView):
    @extend_schema(tags=TAGS, responses={200: ConfigDocumentSerializer, **COMMON_ERRORS})
    def get(self, request: Request) -> Response:
        """Export services, versions, applications, whitelists and key metadata (no hashes)."""
        return Response(config_export())


class ConfigImportView(AdminAPIView):
    @extend_schema(
        tags=TAGS,
        parameters=[DRY_RUN],
        request=ConfigDocumentSerializer,
        responses={200: ImportResultSerializer, 400: ERROR, **COMMON_ERRORS},
    )
    def post(self, request: Request) -> Response:
        """Make the config equal to the document, all or nothing; answer the diff.

        Objects are matched by natural keys; what the document lacks is deleted. API
        keys are never touched. An invalid document changes nothing: 400 naming every
        problem with its location.
        """
        dry_run = DRY_RUN_VALUES.get(request.query_params.get("dry_run", "").lower())
        if dry_run is None:
            raise ValidationError({"dry_run": ["Use 1 or true for a dry run, 0 or false (or nothing) to apply."]})
        try:
            diff = config_import(request.data, actor=request.user, dry_run=dry_run)
        except ConfigInvalid as invalid:
            problems = [p.as_dict() for p in invalid.problems]
            body = {
                "code": "invalid_config",
                "message": f"The document has {len(problems)} problem(s); nothing was changed.",
                "request_id": request_id_for(request.META.get("HTTP_X_REQUEST_ID")),
                "problems": problems,
            }
            return Response({"error": body}, status=status.HTTP_400_BAD_REQUEST)
        return Response(diff.as_dict())
