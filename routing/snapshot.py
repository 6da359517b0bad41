"""The immutable, compiled configuration snapshot every gateway process serves from (SPEC §6).

``current()`` returns the snapshot in force; a reload builds a complete new one and
swaps it in with one assignment, so a request never sees a half-built config.
The record types here are the contract between routing, access and queues.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from types import MappingProxyType

from access.patterns import PathPattern, compile_pattern

DEFAULT_VERSION = "default"  # the name of default_url in X-Service-Version
QUEUE_SCHEME = "queue://"


@dataclass(frozen=True, slots=True)
class CompiledVersion:
    """An active service version. ``queue`` is set when ``url`` is ``queue://<queue>``."""

    version: str
    url: str
    weight: int
    queue: str | None


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """An active service, ready to match and forward.

    ``versions`` holds active versions only; ``default`` is the default_url target
    (version name ``"default"``). ``upstream_prefix`` is already resolved (None in the
    table became ``route_prefix``).
    """

    service_id: str
    service_name: str
    route_prefix: str
    upstream_prefix: str
    default: CompiledVersion
    current_version: str | None
    fallback_url: str | None
    timeout_ms: int | None
    versions: Mapping[str, CompiledVersion]
    service_key: str | None  # from GATEWAY_SERVICE_KEY_<NAME>, sent as X-Service-Key
    weighted_versions: tuple[CompiledVersion, ...] = ()  # active, weight > 0, by name
    cumulative_weights: tuple[int, ...] = ()  # running sums of their weights

    def target(self, version: str) -> CompiledVersion | None:
        """Return the active version ``version`` (``default``: default_url), or None."""
        if version == DEFAULT_VERSION:
            return self.default
        return self.versions.get(version)


@dataclass(frozen=True, slots=True)
class CompiledEntry:
    """A whitelist entry of an active application, its pattern compiled once."""

    id: str
    application_id: str
    pattern: PathPattern
    methods: frozenset[str]  # empty: all
    versions: frozenset[str]  # empty: all
    rate_limit: int | None  # per minute; None: unlimited
    is_public: bool

    def allows_method(self, method: str) -> bool:
        return not self.methods or method in self.methods


@dataclass(frozen=True, slots=True)
class CompiledApplication:
    """An active application with its whitelist entries (most specific first)."""

    id: str
    name: str
    allowed_services: frozenset[str]  # empty: all
    allowed_versions: frozenset[str]  # empty: all
    allowed_origins: frozenset[str]  # empty: no cross-origin use
    entries: tuple[CompiledEntry, ...]


@dataclass(frozen=True, slots=True)
class CompiledKey:
    """An API key as stored: prefix, hash and state. Keys of inactive applications are left out."""

    id: str
    prefix: str
    hash: str
    application_id: str
    expires_at: datetime | None
    is_active: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a request needs, compiled from the five tables at one moment."""

    version: int
    loaded_at: datetime
    routes: tuple[CompiledRoute, ...]  # longest route_prefix first
    routes_by_prefix: Mapping[str, CompiledRoute]
    applications: Mapping[str, CompiledApplication]  # by id
    keys: Mapping[str, CompiledKey]  # by key_prefix
    public_entries: tuple[CompiledEntry, ...]  # every is_public entry of active applications
    counts: Mapping[str, int] = field(default_factory=dict)


# --- Compiling --------------------------------------------------------------------------


def compile_snapshot(version: int) -> Snapshot:
    """Build a complete Snapshot from the five tables, labelled ``version``.

    Only active services, their active versions and active applications are kept.
    Every key of an active application is kept with its state, so a revoked key is
    recognised (and refused) rather than unknown. Runs a handful of queries; call it
    inside one transaction for a consistent view (``reload`` does).
    """
    from access.models import ApiKey, Application, EndpointWhitelist
    from gateway_project.conf import gateway_config
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


# --- The snapshot in force ---------------------------------------------------------------

_current: Snapshot | None = None


def current() -> Snapshot:
    """Return the snapshot in force, loading the first one from the database if needed.

    Raises ``SnapshotUnavailable`` only when no snapshot was ever loaded and the
    database cannot be read; once loaded, a snapshot is always returned.
    """
    snapshot = _current
    if snapshot is None:
        from routing import reload

        snapshot = reload.load_now()
    return snapshot


def install(snapshot: Snapshot) -> None:
    """Make ``snapshot`` the one in force: one assignment, atomic for every reader."""
    global _current  # the single swap point of the process
    _current = snapshot


def installed() -> Snapshot | None:
    """Return the snapshot in force, or None before the first load (never queries)."""
    return _current


class SnapshotUnavailable(Exception):
    """No snapshot was ever loaded in this process and the database cannot be read."""
