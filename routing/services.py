"""Writes to routing data: services and their versions, validated and audited.

Each function validates through the model (``full_clean``), saves, and records a
``LogEntry`` for ``actor``. Reload needs no call here: the routing app's signals
turn every committed save or delete into one config reload (SPEC §6).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway_core.changes import Actor, model_create, model_delete, model_update
from routing.models import ServiceConfig, ServiceVersion

SERVICE_FIELDS = (
    "service_name",
    "default_url",
    "current_version",
    "fallback_url",
    "is_active",
    "route_prefix",
    "upstream_prefix",
    "timeout_ms",
)
VERSION_FIELDS = ("version", "url", "weight", "is_active")


def service_create(*, actor: Actor, fields: Mapping[str, object]) -> ServiceConfig:
    """Create a service from ``fields`` (SERVICE_FIELDS); raise ValidationError when invalid."""
    service = ServiceConfig(**_only(fields, SERVICE_FIELDS))
    model_create(service, actor=actor)
    return service


def service_update(*, service: ServiceConfig, actor: Actor, fields: Mapping[str, object]) -> list[str]:
    """Change ``fields`` of ``service``; return the names of the fields that changed."""
    return model_update(service, fields=_only(fields, SERVICE_FIELDS), actor=actor)


def service_delete(*, service: ServiceConfig, actor: Actor) -> None:
    """Delete ``service`` with its versions (each recorded in the history)."""
    for version in service.versions.all():
        model_delete(version, actor=actor)
    model_delete(service, actor=actor)


def service_version_create(*, service: ServiceConfig, actor: Actor, fields: Mapping[str, object]) -> ServiceVersion:
    """Create a version of ``service`` from ``fields`` (VERSION_FIELDS)."""
    version = ServiceVersion(service=service, **_only(fields, VERSION_FIELDS))
    model_create(version, actor=actor)
    return version


def service_version_update(*, version: ServiceVersion, actor: Actor, fields: Mapping[str, object]) -> list[str]:
    """Change ``fields`` of ``version``; return the names of the fields that changed."""
    return model_update(version, fields=_only(fields, VERSION_FIELDS), actor=actor)


def service_version_delete(*, version: ServiceVersion, actor: Actor) -> None:
    """Delete ``version``."""
    model_delete(version, actor=actor)


def _only(fields: Mapping[str, object], allowed: tuple[str, ...]) -> dict[str, object]:
    unknown = set(fields) - set(allowed)
    if unknown:
        raise TypeError(f"Unknown fields: {', '.join(sorted(unknown))}")
    return dict(fields)
