"""/admin/cache and /admin/cache/refresh: the config snapshot and a forced reload (SPEC §6)."""

from __future__ import annotations

import contextlib
import os

from django.db import DatabaseError
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from admin_panel.api.base import COMMON_ERRORS, AdminAPIView
from admin_panel.serializers import CacheStateSerializer, StatusSerializer

TAGS = ["cache"]


class CacheView(AdminAPIView):
    required_permissions = {"GET": ("routing.view_serviceconfig",)}

    @extend_schema(tags=TAGS, responses={200: CacheStateSerializer, **COMMON_ERRORS})
    def get(self, request: Request) -> Response:
        """Describe the snapshot of every worker of this node, and the database's config version.

        Every worker of every gateway node follows the database's version within the
        propagation bound; ``up_to_date`` says whether this one already has, and
        ``workers`` lists each live worker of the answering gunicorn with its version.
        """
        from gateway_core import metrics, snapshot
        from routing import reload

        with contextlib.suppress(snapshot.SnapshotUnavailable):
            snapshot.current()  # loads it in a process that has none yet (the admin panel)
        state = reload.snapshot_status()
        installed = snapshot.installed()
        try:
            config_version: int | None = reload.revision_read()
        except DatabaseError:
            config_version = None
        data = {
            "loaded": state.loaded,
            "version": state.version,
            "loaded_at": state.loaded_at,
            "counts": dict(installed.counts) if installed is not None else {},
            "config_version": config_version,
            "up_to_date": state.loaded and config_version is not None and state.version == config_version,
            "last_error": state.last_error,
            "pid": os.getpid(),
        }
        workers = metrics.node_worker_versions()
        data["workers"] = (
            [{"pid": pid, "version": version} for pid, version in sorted(workers.items())]
            if workers is not None
            else None
        )
        data["all_workers_up_to_date"] = (
            workers is not None
            and config_version is not None
            and bool(workers)
            and all(version == config_version for version in workers.values())
        )
        return Response(CacheStateSerializer(data).data)


class CacheRefreshView(AdminAPIView):
    required_permissions = {"POST": ("routing.change_serviceconfig",)}

    @extend_schema(tags=TAGS, request=None, responses={202: StatusSerializer, **COMMON_ERRORS})
    def post(self, request: Request) -> Response:
        """Bump the config version: every gateway process of every node reloads its snapshot."""
        from routing.reload import request_reload

        request_reload()
        return Response({"status": "reload_requested"}, status=status.HTTP_202_ACCEPTED)
