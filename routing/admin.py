"""Django admin for services and their versions (port 4201).

Every save goes through the model form, so ``full_clean()`` refuses the same input as
the admin API and imports; model signals then reload every gateway (SPEC §6).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from gateway_core.admin_actions import activate, deactivate
from routing.models import ServiceConfig, ServiceVersion


class UpstreamKindFilter(admin.SimpleListFilter):
    """Filter services by where they send traffic: an HTTP upstream or a queue."""

    title = "upstream kind"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("http", "HTTP upstream"), ("queue", "Queue")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "queue":
            return queryset.filter(default_url__startswith="queue://")
        if self.value() == "http":
            return queryset.exclude(default_url__startswith="queue://")
        return queryset


class ServiceConfigForm(forms.ModelForm):
    """The service form, with an explicit choice for the empty ``upstream_prefix``.

    In the table, NULL means "same as the route prefix" and the empty string means
    "strip the prefix"; a blank text box cannot say which, so stripping is a checkbox.
    """

    strip_route_prefix = forms.BooleanField(
        required=False,
        label="Strip route prefix",
        help_text="Send upstream only the part of the path after the route prefix "
        "(stores an empty upstream prefix). Leave the upstream prefix blank when ticking this.",
    )

    class Meta:
        model = ServiceConfig
        fields = (
            "service_name",
            "is_active",
            "default_url",
            "current_version",
            "fallback_url",
            "route_prefix",
            "upstream_prefix",
            "timeout_ms",
        )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and self.instance.upstream_prefix == "":
            self.fields["strip_route_prefix"].initial = True

    def clean(self) -> dict[str, object]:
        cleaned = super().clean()
        if cleaned.get("strip_route_prefix"):
            if cleaned.get("upstream_prefix"):
                self.add_error("upstream_prefix", "Leave this blank to strip the route prefix, or untick the box.")
            else:
                cleaned["upstream_prefix"] = ""
        return cleaned


class ServiceVersionInline(admin.TabularInline):
    model = ServiceVersion
    extra = 0
    fields = ("version", "url", "weight", "is_active", "updated_at")
    readonly_fields = ("updated_at",)
    show_change_link = True


@admin.register(ServiceConfig)
class ServiceConfigAdmin(admin.ModelAdmin):
    form = ServiceConfigForm
    list_display = (
        "service_name",
        "route_prefix",
        "default_url",
        "current_version",
        "version_count",
        "is_active",
        "updated_at",
    )
    list_display_links = ("service_name",)
    list_filter = ("is_active", UpstreamKindFilter)
    search_fields = ("service_name", "route_prefix", "default_url", "fallback_url", "versions__url")
    ordering = ("service_name",)
    actions = [activate, deactivate]
    inlines = [ServiceVersionInline]
    readonly_fields = ("id", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("service_name", "is_active", "default_url", "current_version", "fallback_url")}),
        (
            "Paths",
            {"fields": ("route_prefix", "upstream_prefix", "strip_route_prefix")},
        ),
        ("Upstream", {"fields": ("timeout_ms",)}),
        ("Record", {"fields": ("id", "created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(_version_count=Count("versions", distinct=True))

    @admin.display(description="versions", ordering="_version_count")
    def version_count(self, obj: ServiceConfig) -> int:
        return getattr(obj, "_version_count", 0)


@admin.register(ServiceVersion)
class ServiceVersionAdmin(admin.ModelAdmin):
    list_display = ("version", "service", "url", "weight", "is_active", "updated_at")
    list_filter = ("is_active", "service")
    search_fields = ("version", "url", "service__service_name")
    list_select_related = ("service",)
    autocomplete_fields = ("service",)
    ordering = ("service__service_name", "version")
    actions = [activate, deactivate]
    readonly_fields = ("id", "created_at", "updated_at")
    fields = ("service", "version", "url", "weight", "is_active", "id", "created_at", "updated_at")
