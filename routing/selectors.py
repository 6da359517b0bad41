"""Reads of routing data for the admin API and the config export."""

from __future__ import annotations

from django.db.models import QuerySet

from routing.models import ServiceConfig, ServiceVersion


def service_list() -> QuerySet[ServiceConfig]:
    """Return every service, by name."""
    return ServiceConfig.objects.order_by("service_name")


def service_get(service_name: str) -> ServiceConfig | None:
    """Return the service named ``service_name``, or None (also for a name no row can have)."""
    if "\x00" in service_name:  # PostgreSQL refuses NUL in a query parameter
        return None
    return ServiceConfig.objects.filter(service_name=service_name).first()


def service_version_list(service: ServiceConfig) -> QuerySet[ServiceVersion]:
    """Return the versions of ``service``, by version name."""
    return ServiceVersion.objects.filter(service=service).select_related("service").order_by("version")


def service_version_get(service: ServiceConfig, version: str) -> ServiceVersion | None:
    """Return ``version`` of ``service``, or None."""
    if "\x00" in version:
        return None
    return ServiceVersion.objects.filter(service=service, version=version).select_related("service").first()
