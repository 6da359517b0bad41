"""/admin/config/export, /admin/config/import and /admin/config/revisions: the whole config as one document."""

from __future__ import annotations

from collections.abc import Mapping

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from admin_panel.api.base import COMMON_ERRORS, ERROR, WITH_LOOKUP, AdminAPIView, found
from admin_panel.config_io import ConfigInvalid, ImportDiff, config_export, config_import
from admin_panel.models import Revision
from admin_panel.revisions import revision_get, revision_list, revision_rollback
from admin_panel.roles import config_permissions
from admin_panel.serializers import (
    ConfigDocumentSerializer,
    ImportResultSerializer,
    RevisionDetailSerializer,
    RevisionSerializer,
)
from gateway_core.request_id import request_id_for

TAGS = ["config"]
# An empty ``?dry_run=`` is refused like any other unknown value: on an import or a rollback
# "apply" must be asked for (or the parameter left out), never guessed.
DRY_RUN_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
DRY_RUN = OpenApiParameter(
    "dry_run", OpenApiTypes.BOOL, OpenApiParameter.QUERY, description="1: only show the diff, change nothing."
)


class ConfigExportView(AdminAPIView):
    @property
    def required_permissions(self) -> Mapping[str, tuple[str, ...]]:
        return {"GET": config_permissions("view", with_keys=True)}

    @extend_schema(tags=TAGS, responses={200: ConfigDocumentSerializer, **COMMON_ERRORS})
    def get(self, request: Request) -> Response:
        """Export services, versions, applications, whitelists and key metadata (no hashes)."""
        return Response(config_export())


class ConfigImportView(AdminAPIView):
    @property
    def required_permissions(self) -> Mapping[str, tuple[str, ...]]:
        # Even a dry run: the diff is the editor's preview of a change only an editor may make.
        return {"POST": config_permissions("view", "add", "change", "delete")}

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
        dry_run = dry_run_requested(request)
        try:
            diff = config_import(request.data, actor=request.user, dry_run=dry_run)
        except ConfigInvalid as invalid:
            return invalid_config(request, invalid)
        return Response(diff.as_dict())


def dry_run_requested(request: Request) -> bool:
    """Return the ``dry_run`` query parameter as a bool; raise a 400 for another value."""
    value = request.query_params.get("dry_run")
    if value is None:
        return False
    dry_run = DRY_RUN_VALUES.get(value.lower())
    if dry_run is None:
        raise ValidationError({"dry_run": ["Use 1 or true for a dry run, 0 or false (or leave it out) to apply."]})
    return dry_run


def invalid_config(request: Request, invalid: ConfigInvalid) -> Response:
    """Answer 400 naming every problem of a document that was not applied."""
    problems = [p.as_dict() for p in invalid.problems]
    body = {
        "code": "invalid_config",
        "message": f"The document has {len(problems)} problem(s); nothing was changed.",
        "request_id": request_id_for(request.META.get("HTTP_X_REQUEST_ID")),
        "problems": problems,
    }
    return Response({"error": body}, status=status.HTTP_400_BAD_REQUEST)


REVISION_NUMBER = OpenApiParameter("number", OpenApiTypes.INT, OpenApiParameter.PATH, description="Revision number.")


def _revision(number: str) -> Revision:
    """Return revision ``number``; a JSON 404 for an unknown or malformed number."""
    return found(revision_get(int(number)) if number.isdigit() and len(number) < 19 else None, "revision")


class RevisionListView(AdminAPIView):
    required_permissions = {"GET": ("admin_panel.view_revision",)}

    @extend_schema(tags=TAGS, responses={200: RevisionSerializer(many=True), **COMMON_ERRORS})
    def get(self, request: Request) -> Response:
        """List the config revisions, newest first: number, when, who, and what changed."""
        return Response(RevisionSerializer(revision_list(), many=True).data)


@extend_schema(parameters=[REVISION_NUMBER])
class RevisionDetailView(AdminAPIView):
    required_permissions = {"GET": ("admin_panel.view_revision",)}

    @extend_schema(tags=TAGS, responses={200: RevisionDetailSerializer, **WITH_LOOKUP})
    def get(self, request: Request, number: str) -> Response:
        """Show one revision with the whole config document as of that revision."""
        return Response(RevisionDetailSerializer(_revision(number)).data)


@extend_schema(parameters=[REVISION_NUMBER])
class RevisionRollbackView(AdminAPIView):
    @property
    def required_permissions(self) -> Mapping[str, tuple[str, ...]]:
        return {"POST": ("admin_panel.view_revision", *config_permissions("view", "add", "change", "delete"))}

    @extend_schema(
        tags=TAGS,
        parameters=[DRY_RUN],
        request=None,
        responses={200: ImportResultSerializer, 400: ERROR, **WITH_LOOKUP},
    )
    def post(self, request: Request, number: str) -> Response:
        """Make the config equal to revision ``number`` (an import, all or nothing); answer the diff.

        Recorded as a new revision naming the one rolled back to. A document that no
        longer applies (an application it lacks has API keys now) changes nothing: 400.
        """
        revision = _revision(number)
        dry_run = dry_run_requested(request)
        try:
            diff: ImportDiff = revision_rollback(revision, actor=request.user, dry_run=dry_run)
        except ConfigInvalid as invalid:
            return invalid_config(request, invalid)
        return Response(diff.as_dict())
