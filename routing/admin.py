"""Django admin for services and their versions (port 4201).

Every save goes through the model form, so ``full_clean()`` refuses the same input as
the admin API and imports; model signals then reload every gateway (SPEC §6).
"""

from __future__ import annotations

import contextvars
import logging
import time

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from gateway_core import traffic
from gateway_core.admin_actions import activate, deactivate
from gateway_core.admin_history import ChangeValuesMixin
from routing.models import ServiceConfig, ServiceVersion

logger = logging.getLogger(__name__)

# The health of every service, read once per list page (one read of the traffic store).
_health: contextvars.ContextVar[dict[str, dict[str, object]] | None] = contextvars.ContextVar("health", default=None)


def service_health() -> dict[str, dict[str, object]] | None:
    """Return each service's health of the last five minutes by name; None when the counts are unavailable."""
    try:
        return {str(item["service"]): item for item in traffic.health_summary(traffic.traffic_store(), time.time())}
    except Exception as exc:  # the list must render without Redis
        logger.warning("service health unavailable: %s", type(exc).__name__)
        return None


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
        if "current_version" in self.fields:  # absent from a view-only form
            self.fields["current_version"] = self._version_choice()
        if "default_url" in self.fields:
            self.fields["default_url"].help_text = (
                "Serves unpinned traffic only while no active version has a weight above 0: once one "
                "does, the weighted versions share all unpinned traffic (see their share below) and the "
                "default URL is reached only by pinning X-Service-Version: default. "
                + str(self.fields["default_url"].help_text)
            )

    def _version_choice(self) -> forms.Field:
        """A choice among this service's versions, not free text (a version added below can be chosen after saving)."""
        names = list(self.instance.versions.values_list("version", flat=True)) if self.instance.pk else []
        current = self.instance.current_version
        if current and current not in names:
            names.append(current)
        return forms.TypedChoiceField(
            choices=[("", "none: the default URL"), *[(name, name) for name in sorted(names)]],
            required=False,
            empty_value=None,
            label="Current version",
            help_text="Served when no active version has a weight above 0; "
            "without one the default URL serves. Add versions below, save, then choose.",
        )

    def clean(self) -> dict[str, object]:
        cleaned = super().clean()
        if cleaned.get("strip_route_prefix"):
            if cleaned.get("upstream_prefix"):
                self.add_error("upstream_prefix", "Leave this blank to strip the route prefix, or untick the box.")
            else:
                cleaned["upstream_prefix"] = ""
        return cleaned


def traffic_shares(service: ServiceConfig) -> dict[str, float]:
    """Return each active version's share of unpinned traffic (weight / sum of active weights)."""
    weights = {v.version: v.weight for v in service.versions.all() if v.is_active and v.weight > 0}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()} if total else {}


class ServiceVersionInline(admin.TabularInline):
    model = ServiceVersion
    extra = 0
    fields = ("version", "url", "weight", "traffic_share", "is_active", "updated_at")
    readonly_fields = ("traffic_share", "updated_at")
    show_change_link = True
    verbose_name_plural = "versions: active ones with a weight above 0 share all unpinned traffic"

    @admin.display(description="share of unpinned traffic")
    def traffic_share(self, obj: ServiceVersion) -> str:
        if obj.pk is None:
            return "after saving"
        shares = traffic_shares(obj.service)
        share = shares.get(obj.version)
        if not shares and obj.is_active and obj.service.current_version == obj.version:
            return "100 % (current version)"
        if share is None:
            return "0 % (pinned only)" if obj.is_active else "0 % (inactive)"
        return f"{share * 100:.0f} %"


@admin.register(ServiceConfig)
class ServiceConfigAdmin(ChangeValuesMixin, admin.ModelAdmin):
    form = ServiceConfigForm
    list_display = (
        "service_name",
        "route_prefix",
        "default_url",
        "current_version",
        "version_count",
        "health",
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

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        token = _health.set(service_health())
        try:
            response = super().changelist_view(request, extra_context)
            if hasattr(response, "render"):
                response.render()  # while the health read for this page is set
            return response
        finally:
            _health.reset(token)

    @admin.display(description="health (5 min)")
    def health(self, obj: ServiceConfig) -> str:
        health = _health.get()
        if health is None:
            return "n/a"
        item = health.get(obj.service_name)
        if item is None:
            return format_html('<span class="gw-health idle">{}</span>', "no traffic")
        rate = item["error_rate"] or 0.0
        p95 = item["p95_ms"]
        fallback = item["fallback_share"] or 0.0
        details = f"{item['requests']} req · {rate * 100:.1f} % 5xx · p95 {'n/a' if p95 is None else f'{p95:.0f} ms'}"
        if fallback:
            details += f" · {fallback * 100:.0f} % fallback"
        if item["breaker_open"]:
            details += " · breaker open"
        return format_html(
            '<span class="gw-health {}">{}</span> <small>{}</small>', item["status"], item["status"], details
        )


@admin.register(ServiceVersion)
class ServiceVersionAdmin(ChangeValuesMixin, admin.ModelAdmin):
    list_display = ("version", "service", "url", "weight", "is_active", "updated_at")
    list_filter = ("is_active", "service")
    search_fields = ("version", "url", "service__service_name")
    list_select_related = ("service",)
    autocomplete_fields = ("service",)
    ordering = ("service__service_name", "version")
    actions = [activate, deactivate]
    readonly_fields = ("id", "created_at", "updated_at")
    fields = ("service", "version", "url", "weight", "is_active", "id", "created_at", "updated_at")
