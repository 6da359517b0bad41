"""Admin actions shared by every app's admin pages: activate / deactivate, object by object."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest


def set_active(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, *, active: bool) -> None:
    """Set ``is_active`` on each selected object through ``save()``, recording it in the admin history.

    One save per object (not ``queryset.update()``) so that the save signals fire and
    every gateway reloads; each change gets its own LogEntry.
    """
    changed = 0
    for obj in queryset:
        if obj.is_active == active:
            continue
        obj.is_active = active
        obj.save(update_fields=["is_active", "updated_at"])
        modeladmin.log_change(request, obj, [{"changed": {"fields": ["Is active"]}}])
        changed += 1
    verb = "activated" if active else "deactivated"
    modeladmin.message_user(request, f"{changed} {_plural(modeladmin.model, changed)} {verb}.", messages.SUCCESS)


def _plural(model: type[Model], count: int) -> str:
    meta = model._meta
    return str(meta.verbose_name if count == 1 else meta.verbose_name_plural)


@admin.action(description="Activate selected %(verbose_name_plural)s", permissions=["change"])
def activate(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Mark the selected objects active."""
    set_active(modeladmin, request, queryset, active=True)


@admin.action(description="Deactivate selected %(verbose_name_plural)s", permissions=["change"])
def deactivate(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Mark the selected objects inactive."""
    set_active(modeladmin, request, queryset, active=False)
