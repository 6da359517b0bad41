"""Compile the configuration tables into a ``Snapshot`` (SPEC §6)."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import accumulate
from types import MappingProxyType

from gateway_core.patterns import compile_pattern
from gateway_core.snapshot import (
    DEFAULT_VERSION,
    QUEUE_SCHEME,
    CompiledApplication,
    CompiledEntry,
    CompiledKey,
    CompiledRoute,
    CompiledVersion,
    Snapshot,
)


def compile_snapshot(version: int) -> Snapshot:
    """Build a complete Snapshot from the five tables, labelled ``version``.

    Only active services, their active versions and active applications are kept.
    Every key of an active application is kept with its state, so a revoked key is
    recognised (and refused) rather than unknown. Runs a handful of queries; call it
    inside one transaction for a consistent view (``reload`` does).
    """
    from access.models import ApiKey, Application, EndpointWhitelist
    from gateway_core.conf import gateway_config
    from routing.models import ServiceConfig, ServiceVersion

    service_keys = gateway_config().service_keys
    versions_by_service: dict[str, dict[str, CompiledVersion]] = {}
    version_rows = ServiceVersion.objects.filter(is_active=True, service__is_active=True).values_list(
        "service_id", "version", "url", "weight"
    )
    for service_id, name, url, weight in version_rows:
        versions_by_service.setdefault(str(service_id), {})[name] = compiled_version(name, url, weight)

    routes: list[CompiledRoute] = []
    for row in ServiceConfig.objects.filter(is_active=True).values(
        "id",
        "service_name",
        "route_prefix",
        "upstream_prefix",
        "default_url",
        "current_version",
        "fallback_url",
        "timeout_ms",
    ):
        service_id = str(row["id"])
        versions = versions_by_service.get(service_id, {})
        weighted = tuple(v for _, v in sorted(versions.items()) if v.weight > 0)
        name = row["service_name"]
        prefix = row["route_prefix"] or f"/api/v1/{name}"
        upstream_prefix = prefix if row["upstream_prefix"] is None else row["upstream_prefix"]
        routes.append(
            CompiledRoute(
                service_id=service_id,
                service_name=name,
                route_prefix=prefix,
                upstream_prefix=upstream_prefix.rstrip("/"),
                default=compiled_version(DEFAULT_VERSION, row["default_url"], 0),
                current_version=row["current_version"] or None,
                fallback_url=row["fallback_url"] or None,
                timeout_ms=row["timeout_ms"],
                versions=MappingProxyType(versions),
                service_key=service_keys.get(name.upper().replace("-", "_")),
                weighted_versions=weighted,
                cumulative_weights=tuple(accumulate(v.weight for v in weighted)),
            )
        )
    routes.sort(key=lambda r: len(r.route_prefix), reverse=True)

    entries_by_app: dict[str, list[CompiledEntry]] = {}
    entry_rows = EndpointWhitelist.objects.filter(application__is_active=True).values_list(
        "id", "application_id", "endpoint_path", "allowed_methods", "allowed_versions", "rate_limit", "is_public"
    )
    for entry_id, app_id, path, methods, versions_allowed, rate_limit, is_public in entry_rows:
        entries_by_app.setdefault(str(app_id), []).append(
            CompiledEntry(
                id=str(entry_id),
                application_id=str(app_id),
                pattern=compile_pattern(path),
                methods=frozenset(methods or ()),
                versions=frozenset(versions_allowed or ()),
                rate_limit=rate_limit,
                is_public=is_public,
            )
        )

    applications: dict[str, CompiledApplication] = {}
    public_entries: list[CompiledEntry] = []
    for row in Application.objects.filter(is_active=True).values(
        "id", "name", "allowed_services", "allowed_versions", "allowed_origins"
    ):
        app_id = str(row["id"])
        entries = sorted(entries_by_app.get(app_id, ()), key=entry_specificity)
        public_entries.extend(e for e in entries if e.is_public)
        applications[app_id] = CompiledApplication(
            id=app_id,
            name=row["name"],
            allowed_services=frozenset(row["allowed_services"] or ()),
            allowed_versions=frozenset(row["allowed_versions"] or ()),
            allowed_origins=frozenset(row["allowed_origins"] or ()),
            entries=tuple(entries),
        )
    public_entries.sort(key=entry_specificity)

    keys: dict[str, CompiledKey] = {}
    key_rows = ApiKey.objects.filter(application__is_active=True).values_list(
        "id", "key_prefix", "api_key_hash", "application_id", "expires_at", "is_active"
    )
    for key_id, prefix, key_hash, app_id, expires_at, is_active in key_rows:
        keys[prefix] = CompiledKey(
            id=str(key_id),
            prefix=prefix,
            hash=key_hash,
            application_id=str(app_id),
            expires_at=expires_at,
            is_active=is_active,
        )

    return Snapshot(
        version=version,
        loaded_at=datetime.now(tz=UTC),
        routes=tuple(routes),
        routes_by_prefix=MappingProxyType({r.route_prefix: r for r in routes}),
        applications=MappingProxyType(applications),
        keys=MappingProxyType(keys),
        public_entries=tuple(public_entries),
        counts=MappingProxyType(
            {
                "services": len(routes),
                "versions": sum(len(r.versions) for r in routes),
                "applications": len(applications),
                "whitelist_entries": sum(len(a.entries) for a in applications.values()),
                "api_keys": len(keys),
            }
        ),
    )


def compiled_version(name: str, url: str, weight: int) -> CompiledVersion:
    """Return the record of a version (or of ``default_url`` under the name ``default``)."""
    queue = url[len(QUEUE_SCHEME) :] if url.startswith(QUEUE_SCHEME) else None
    return CompiledVersion(version=name, url=url.rstrip("/") if queue is None else url, weight=weight, queue=queue)


def entry_specificity(entry: CompiledEntry) -> tuple[int, bool, int, str]:
    """Sort key putting the most specific whitelist entry first.

    More literal segments first; at equal count an exact pattern before a ``/*``
    subtree, then the longer pattern; the source breaks ties so the order is stable.
    """
    source = entry.pattern.source
    return (-entry.pattern.literal_segments, source.endswith("*"), -len(source), source)
