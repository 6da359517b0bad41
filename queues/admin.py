"""Django admin views of queued tasks and stored analytics events (read-only).

Workers and the producer own these rows; the admin only shows them, so an operator
can follow a task or a failure without a database shell.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from queues.models import AnalyticsEvent, TaskStatus


class ReadOnlyAdmin(admin.ModelAdmin):
    """Listing and detail pages only: no add, change or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False


@admin.register(TaskStatus)
class TaskStatusAdmin(ReadOnlyAdmin):
    list_display = ("id", "queue", "status", "attempts", "application_id", "request_id", "created_at", "updated_at")
    list_filter = ("queue", "status")
    search_fields = ("=id", "=request_id", "=application_id")
    date_hierarchy = "created_at"
    # The idempotency key digest is internal: it is not shown.
    fields = (
        "id",
        "queue",
        "status",
        "attempts",
        "application_id",
        "request_id",
        "result",
        "error",
        "created_at",
        "updated_at",
    )


@admin.register(AnalyticsEvent)
class AnalyticsEventAdmin(ReadOnlyAdmin):
    list_display = ("name", "application_id", "task_id", "occurred_at")
    list_filter = ("name",)
    search_fields = ("name", "=task_id", "=application_id")
    date_hierarchy = "occurred_at"
