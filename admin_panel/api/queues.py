"""/admin/queues: depth and consumers of each queue, as the broker reports them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from admin_panel.api.base import COMMON_ERRORS, AdminAPIView
from admin_panel.serializers import QueuesSerializer
from queues.selectors import queue_stats


class QueuesView(AdminAPIView):
    required_permissions = {"GET": ("queues.view_taskstatus",)}

    @extend_schema(tags=["queues"], responses={200: QueuesSerializer, **COMMON_ERRORS})
    def get(self, request: Request) -> Response:
        """Show each queue's depth and consumers (null where the broker cannot tell or is down)."""
        return Response(QueuesSerializer({"queues": queue_stats()}).data)
