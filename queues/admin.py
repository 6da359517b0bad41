"""Django admin views of queued tasks and stored analytics events (read-only).

Workers and the producer own these rows; the admin only shows them, so an operator
can follow a task or a failure without a database shell.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest

from access.models import Application
from queues.models import AnalyticsEvent, TaskStatus

ERROR_PREVIEW_CHARS = 80


class ReadOnlyAdmin(admin.ModelAdmin):
    """Listing and detail pages only: no add, change or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False


class ApplicationNameAdmin(ReadOnlyAdmin):
    """Shows the application's name where the row holds only its id (rows outlive applications)."""

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        names = Application.objects.filter(pk=OuterRef("application_id")).values("name")[:1]
        return super().get_queryset(request).annotate(_application_name=Subquery(names))

    @admin.display(description="application", ordering="_application_name")
    def application(self, obj: TaskStatus | AnalyticsEvent) -> str:
        if obj.application_id is None:
            return "(none)"
        name = getattr(obj, "_application_name", None)
        return name if name is not None else f"deleted ({str(obj.application_id)[:8]})"


@admin.register(TaskStatus)
class TaskStatusAdmin(ApplicationNameAdmin):
    list_display = ("id", "queue", "status", "attempts", "application", "error_preview", "request_id", "created_at")
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

    @admin.display(description="error")
    def error_preview(self, obj: TaskStatus) -> str:
        error = str(obj.error or "")
        return error if len(error) <= ERROR_PREVIEW_CHARS else error[: ERROR_PREVIEW_CHARS - 1] + "…"


@admin.register(AnalyticsEvent)
class AnalyticsEventAdmin(ApplicationNameAdmin):
    list_display = ("name", "application", "task_id", "occurred_at")
    list_filter = ("name",)
    search_fields = ("name", "=task_id", "=application_id")
    date_hierarchy = "occurred_at"
