"""Compile the configuration tables into a ``Snapshot``, whole or by applying changed rows (SPEC §6).

``compile_snapshot`` reads every table; ``apply_changes`` builds the next snapshot from
the one in force by re-reading only the rows a change names and sharing every other
record with it (copy-on-write: the old snapshot is never touched, so requests still
running on it see it whole). Both produce equal snapshots for the same table contents
(``tests/unit/test_compiler.py`` checks it after random sequences of changes).

Records are kept compact because a fleet's config is large (10,000 services, 100,000
keys): ids and names are interned, equal patterns and method sets are shared, and long
row loops yield to other greenlets every ``YIELD_EVERY_ROWS`` rows, so a compile never
stalls a gevent worker's requests for long.
"""

from __future__ import annotations

import bisect
import dataclasses
import gc
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from types import MappingProxyType
from typing import TypeVar

from gateway_core.patterns import PathPattern, compile_pattern
from gateway_core.snapshot import (
    DEFAULT_VERSION,
    INDEX_DEPTH,
    QUEUE_SCHEME,
    CompiledApplication,
    CompiledEntry,
    CompiledIssuer,
    CompiledKey,
    CompiledRoute,
    CompiledVersion,
    EntryIndex,
    Snapshot,
)

YIELD_EVERY_ROWS = 100  # well under 1 ms of compile work between two chances for requests to run
FREEZE_ABOVE_RECORDS = 20_000  # a whole compile this large is moved out of the garbage collector's reach
ROW_CHUNK = 2000  # rows fetched per round trip when streaming a large table

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Changes:
    """The ids of the rows one or more config versions touched (created, updated or deleted).

    ``services`` names services whose row or versions changed; ``applications`` those
    whose row changed (their entries and keys are re-read with them); ``entries`` and
    ``keys`` single whitelist entries and API keys.
    """

    services: frozenset[str] = frozenset()
    applications: frozenset[str] = frozenset()
    entries: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.services) + len(self.applications) + len(self.entries) + len(self.keys)


# --- Whole compile -----------------------------------------------------------------------------


def compile_snapshot(version: int) -> Snapshot:
    """Build a complete Snapshot from the tables, labelled ``version``.

    Only active services, their active versions and active applications are kept.
    Every key of an active application is kept with its state, so a revoked key is
    recognised (and refused) rather than unknown. Call it inside one transaction for a
    consistent view (``reload`` does).
    """
    from access.models import ApiKey, Application
    from routing.models import ServiceConfig

    streaming = _whole_compile.set(True)
    collecting = gc.isenabled()
    # A whole compile makes hundreds of thousands of objects and no reference cycles;
    # the collector's full passes over them stalled the worker for seconds meanwhile.
    gc.disable()
    try:
        routes, routes_by_prefix = _ordered(_compile_routes(ServiceConfig.objects.filter(is_active=True)))
        applications = _compile_applications(Application.objects.filter(is_active=True))
        keys = dict(_compile_keys(ApiKey.objects.filter(application__is_active=True)))
    finally:
        _whole_compile.reset(streaming)
        if collecting:
            gc.enable()
    if len(keys) + sum(len(a.entries) for a in applications.values()) + len(routes) > FREEZE_ABOVE_RECORDS:
        # Long-lived and acyclic: out of the generations, later full collections do not
        # walk them (reference counting still frees an old snapshot once unused).
        gc.freeze()
    compiled = _snapshot(
        version,
        routes,
        routes_by_prefix,
        MappingProxyType(applications),
        MappingProxyType(keys),
        _public_entries(applications),
    )
    return with_issuers(compiled, compile_issuers(applications))


# --- Applying changed rows ---------------------------------------------------------------------


def apply_changes(old: Snapshot, changes: Changes, version: int) -> Snapshot:
    """Return ``old`` with the rows named by ``changes`` re-read, labelled ``version``.

    Unchanged records are shared with ``old``; ``old`` itself is not modified. Call it
    inside the same transaction that read ``changes`` (``reload`` does).
    """
    from access.models import ApiKey, Application
    from routing.models import ServiceConfig

    routes, routes_by_prefix = old.routes, old.routes_by_prefix
    if changes.services:
        fresh = _compile_routes(ServiceConfig.objects.filter(is_active=True, id__in=changes.services))
        routes, routes_by_prefix = _replace_routes(old, changes.services, fresh)

    applications, public_entries, public_index = old.applications, old.public_entries, old.public_index
    reread_apps = changes.applications
    if reread_apps or changes.entries:
        apps = dict(old.applications)
        for app_id in reread_apps:
            apps.pop(app_id, None)
        if reread_apps:
            apps.update(_compile_applications(Application.objects.filter(is_active=True, id__in=reread_apps)))
        if changes.entries:
            _apply_entry_changes(apps, changes.entries, reread_apps)
        applications, public_entries = MappingProxyType(apps), _public_entries(apps)
        public_index = None  # built from the new public entries

    keys = old.keys
    if changes.keys and not reread_apps:
        keys = _apply_key_changes(old.keys, changes.keys)
    elif reread_apps or changes.keys:
        gone = changes.keys
        fresh = {
            prefix: key
            for prefix, key in old.keys.items()
            if key.application_id not in reread_apps and key.id not in gone
        }
        if reread_apps:
            fresh.update(
                _compile_keys(ApiKey.objects.filter(application_id__in=reread_apps, application__is_active=True))
            )
        if changes.keys:
            rows = ApiKey.objects.filter(id__in=changes.keys, application__is_active=True).exclude(
                application_id__in=reread_apps
            )
            fresh.update(_compile_keys(rows))
        keys = MappingProxyType(fresh)
    new = _snapshot(version, routes, routes_by_prefix, applications, keys, public_entries, public_index, old)
    # Issuers follow their applications (active state, name for introspection credentials);
    # a change to an issuer row itself is recorded as "everything" and compiled whole.
    issuers = compile_issuers(applications) if reread_apps else [*old.issuers.values(), *old.introspection_issuers]
    return with_issuers(new, issuers)


def _apply_key_changes(old: Mapping[str, CompiledKey], key_ids: frozenset[str]) -> Mapping[str, CompiledKey]:
    """Return ``old`` with the keys ``key_ids`` re-read (applications unchanged).

    A key's prefix is generated once and never edited, so a key still there replaces
    the record under its prefix in a plain copy of the table; only when a key is gone
    (deleted) does its old prefix have to be looked for among all of them.
    """
    from access.models import ApiKey

    found = dict(_compile_keys(ApiKey.objects.filter(id__in=key_ids, application__is_active=True)))
    missing = key_ids - {key.id for key in found.values()}
    if missing:
        fresh = {prefix: key for prefix, key in old.items() if key.id not in missing}
    else:  # a C-level copy of the table (mappingproxy.copy() copies the dict under it)
        fresh = old.copy() if isinstance(old, MappingProxyType) else dict(old)
    fresh.update(found)
    return MappingProxyType(fresh)


def _apply_entry_changes(
    apps: dict[str, CompiledApplication], entry_ids: frozenset[str], reread: frozenset[str]
) -> None:
    """Re-read the entries ``entry_ids`` into ``apps`` (in place), except in the re-read applications."""
    from access.models import EndpointWhitelist

    changed: dict[str, list[CompiledEntry]] = {}
    for app_id, app in apps.items():
        if app_id not in reread and any(e.id in entry_ids for e in app.entries):
            changed[app_id] = [e for e in app.entries if e.id not in entry_ids]
    rows = EndpointWhitelist.objects.filter(id__in=entry_ids, application__is_active=True).exclude(
        application_id__in=reread
    )
    for entry in _compile_entries(rows):
        owner = apps.get(entry.application_id)
        if owner is None:  # its application's activation is a later version's change; it brings the entry
            continue
        changed.setdefault(entry.application_id, list(owner.entries)).append(entry)
    for app_id, unordered in changed.items():
        app = apps[app_id]
        entries = tuple(sorted(unordered, key=entry_specificity))
        apps[app_id] = CompiledApplication(
            id=app.id,
            name=app.name,
            allowed_services=app.allowed_services,
            allowed_versions=app.allowed_versions,
            allowed_origins=app.allowed_origins,
            entries=entries,
            index=entry_index(entries),
        )


# --- Building blocks ---------------------------------------------------------------------------


def _replace_routes(
    old: Snapshot, service_ids: frozenset[str], fresh: Sequence[CompiledRoute]
) -> tuple[tuple[CompiledRoute, ...], Mapping[str, CompiledRoute]]:
    """Return ``old``'s routes without those of ``service_ids``, with ``fresh`` inserted in order.

    A few routes change among thousands: the kept ones stay in order, so the new ones
    are inserted by bisection instead of sorting everything again.
    """
    kept = [route for route in old.routes if route.service_id not in service_ids]
    by_prefix = (
        old.routes_by_prefix.copy()  # the dict under the proxy, copied in C
        if isinstance(old.routes_by_prefix, MappingProxyType)
        else dict(old.routes_by_prefix)
    )
    for route in old.routes:
        if route.service_id in service_ids:
            del by_prefix[route.route_prefix]
    for route in fresh:
        bisect.insort(kept, route, key=route_order)
        by_prefix[route.route_prefix] = route
    return tuple(kept), MappingProxyType(by_prefix)


def _ordered(routes: Iterable[CompiledRoute]) -> tuple[tuple[CompiledRoute, ...], Mapping[str, CompiledRoute]]:
    ordered = tuple(sorted(routes, key=route_order))
    return ordered, MappingProxyType({r.route_prefix: r for r in ordered})


def _public_entries(applications: Mapping[str, CompiledApplication]) -> tuple[CompiledEntry, ...]:
    public = (e for app in applications.values() for e in app.entries if e.is_public)
    return tuple(sorted(public, key=entry_specificity))


def _snapshot(
    version: int,
    routes: tuple[CompiledRoute, ...],
    routes_by_prefix: Mapping[str, CompiledRoute],
    applications: Mapping[str, CompiledApplication],
    keys: Mapping[str, CompiledKey],
    public_entries: tuple[CompiledEntry, ...],
    public_index: EntryIndex | None = None,
    previous: Snapshot | None = None,
) -> Snapshot:
    """Assemble a Snapshot; counts of parts shared with ``previous`` are taken from it, not recounted."""
    if previous is not None and routes is previous.routes:
        versions = previous.counts["versions"]
    else:
        versions = sum(len(r.versions) for r in routes)
    if previous is not None and applications is previous.applications:
        entries = previous.counts["whitelist_entries"]
    else:
        entries = sum(len(a.entries) for a in applications.values())
    return Snapshot(
        version=version,
        loaded_at=datetime.now(tz=UTC),
        routes=routes,
        routes_by_prefix=routes_by_prefix,
        applications=applications,
        keys=keys,
        public_entries=public_entries,
        public_index=entry_index(public_entries) if public_index is None else public_index,
        counts=MappingProxyType(
            {
                "services": len(routes),
                "versions": versions,
                "applications": len(applications),
                "whitelist_entries": entries,
                "api_keys": len(keys),
            }
        ),
    )


def _compile_routes(services) -> list[CompiledRoute]:  # type: ignore[no-untyped-def]  # QuerySet[ServiceConfig]
    """Compile the services of the queryset ``services`` with their active versions."""
    from gateway_core.conf import gateway_config
    from routing.models import ServiceVersion

    service_keys = gateway_config().service_keys
    versions_by_service: dict[str, dict[str, CompiledVersion]] = {}
    version_rows = ServiceVersion.objects.filter(is_active=True, service__in=services.values("id")).values_list(
        "service_id", "version", "url", "weight"
    )
    for service_id, name, url, weight in _cooperative(_stream(version_rows)):
        versions_by_service.setdefault(str(service_id), {})[sys.intern(name)] = compiled_version(name, url, weight)

    routes: list[CompiledRoute] = []
    rows = services.values_list(
        "id",
        "service_name",
        "route_prefix",
        "upstream_prefix",
        "default_url",
        "current_version",
        "fallback_url",
        "timeout_ms",
    )
    for service_id, name, prefix, upstream_prefix, default_url, current, fallback, timeout_ms in _cooperative(
        _stream(rows)
    ):
        sid = str(service_id)
        versions = versions_by_service.get(sid, {})
        weighted = tuple(v for _, v in sorted(versions.items()) if v.weight > 0)
        prefix = prefix or f"/api/v1/{name}"
        upstream = prefix if upstream_prefix is None else upstream_prefix
        routes.append(
            CompiledRoute(
                service_id=sid,
                service_name=sys.intern(name),
                route_prefix=prefix,
                upstream_prefix=upstream.rstrip("/"),
                default=compiled_version(DEFAULT_VERSION, default_url, 0),
                current_version=sys.intern(current) if current else None,
                fallback_url=fallback or None,
                timeout_ms=timeout_ms,
                versions=MappingProxyType(versions),
                service_key=service_keys.get(name.upper().replace("-", "_")),
                weighted_versions=weighted,
                cumulative_weights=tuple(accumulate(v.weight for v in weighted)),
            )
        )
    return routes


def _compile_applications(apps) -> dict[str, CompiledApplication]:  # type: ignore[no-untyped-def]  # QuerySet
    """Compile the applications of the queryset ``apps`` with all their whitelist entries."""
    from access.models import EndpointWhitelist

    entries_by_app: dict[str, list[CompiledEntry]] = {}
    for entry in _compile_entries(EndpointWhitelist.objects.filter(application__in=apps.values("id"))):
        entries_by_app.setdefault(entry.application_id, []).append(entry)
    applications: dict[str, CompiledApplication] = {}
    for app_id, name, services, versions, origins in apps.values_list(
        "id", "name", "allowed_services", "allowed_versions", "allowed_origins"
    ):
        aid = sys.intern(str(app_id))
        entries = tuple(sorted(entries_by_app.get(aid, ()), key=entry_specificity))
        applications[aid] = CompiledApplication(
            id=aid,
            name=name,
            allowed_services=_names(services),
            allowed_versions=_names(versions),
            allowed_origins=frozenset(origins or ()),
            entries=entries,
            index=entry_index(entries),
        )
    return applications


def _compile_entries(rows) -> Iterator[CompiledEntry]:  # type: ignore[no-untyped-def]  # QuerySet
    values = rows.values_list(
        "id",
        "application_id",
        "endpoint_path",
        "allowed_methods",
        "allowed_versions",
        "rate_limit",
        "is_public",
        "rate_limit_by",
        "required_scopes",
    )
    for entry_id, app_id, path, methods, versions, rate_limit, is_public, by, scopes in _cooperative(_stream(values)):
        yield CompiledEntry(
            id=str(entry_id),
            application_id=sys.intern(str(app_id)),
            pattern=_pattern(path),
            methods=_names(methods),
            versions=_names(versions),
            rate_limit=rate_limit,
            is_public=is_public,
            rate_limit_by=by,
            required_scopes=_names(scopes),
        )


def _compile_keys(rows) -> Iterator[tuple[str, CompiledKey]]:  # type: ignore[no-untyped-def]  # QuerySet
    values = rows.values_list("id", "key_prefix", "api_key_hash", "application_id", "expires_at", "is_active")
    for key_id, prefix, key_hash, app_id, expires_at, is_active in _cooperative(_stream(values)):
        yield (
            prefix,
            CompiledKey(
                id=str(key_id),
                prefix=prefix,
                hash=key_hash,
                application_id=sys.intern(str(app_id)),
                expires_at=expires_at,
                is_active=is_active,
            ),
        )


# --- Token issuers (SPEC §4.5a) ------------------------------------------------------------------


def compile_issuers(applications: Mapping[str, CompiledApplication]) -> list[CompiledIssuer]:
    """Return the active token issuers of the active ``applications`` (a small table: read whole).

    HS secrets and introspection client credentials are read from the environment
    here, once per compile, never per request (``access.tokens_secrets``).
    """
    from access.models import TokenIssuer
    from access.tokens_secrets import client_credentials, issuer_secret

    compiled: list[CompiledIssuer] = []
    rows = TokenIssuer.objects.filter(is_active=True, application__is_active=True).order_by("issuer")
    for row in rows.values(
        "id",
        "issuer",
        "application_id",
        "jwks_url",
        "secret_env",
        "introspection_url",
        "audiences",
        "algorithms",
        "user_claim",
        "scope_claim",
        "leeway_s",
    ):
        application = applications.get(str(row["application_id"]))
        if application is None:
            continue
        kind = "jwks" if row["jwks_url"] else "secret" if row["secret_env"] else "introspection"
        client_id, client_secret = client_credentials(application.name) if kind == "introspection" else (None, None)
        compiled.append(
            CompiledIssuer(
                id=str(row["id"]),
                issuer=row["issuer"],
                application_id=application.id,
                kind=kind,
                jwks_url=row["jwks_url"],
                introspection_url=row["introspection_url"],
                audiences=frozenset(row["audiences"] or ()),
                algorithms=frozenset(row["algorithms"] or ()),
                user_claim=row["user_claim"],
                scope_claim=row["scope_claim"],
                leeway_s=row["leeway_s"],
                secret=issuer_secret(row["secret_env"]) if kind == "secret" else None,
                client_id=client_id,
                client_secret=client_secret,
            )
        )
    return compiled


def with_issuers(snapshot: Snapshot, issuers: Iterable[CompiledIssuer]) -> Snapshot:
    """Return ``snapshot`` holding ``issuers``: JWT issuers by ``iss``, introspection issuers in order."""
    ordered = sorted(issuers, key=lambda i: i.issuer)
    return dataclasses.replace(
        snapshot,
        issuers=MappingProxyType({i.issuer: i for i in ordered if i.kind != "introspection"}),
        introspection_issuers=tuple(i for i in ordered if i.kind == "introspection"),
        counts=MappingProxyType({**snapshot.counts, "token_issuers": len(ordered)}),
    )


def compiled_version(name: str, url: str, weight: int) -> CompiledVersion:
    """Return the record of a version (or of ``default_url`` under the name ``default``)."""
    queue = url[len(QUEUE_SCHEME) :] if url.startswith(QUEUE_SCHEME) else None
    return CompiledVersion(
        version=sys.intern(name), url=url.rstrip("/") if queue is None else url, weight=weight, queue=queue
    )


def entry_index(entries: Sequence[CompiledEntry]) -> EntryIndex:
    """Bucket ``entries`` (in match order) by the leading literal segments of their patterns."""
    buckets: dict[str, list[tuple[int, CompiledEntry]]] = {}
    for rank, entry in enumerate(entries):
        buckets.setdefault(_leading_literal_path(entry.pattern.source), []).append((rank, entry))
    return EntryIndex(MappingProxyType({lead: tuple(pairs) for lead, pairs in buckets.items()}))


def _leading_literal_path(source: str) -> str:
    """Return the pattern's literal segments before any ``{name}`` or ``*``, at most INDEX_DEPTH ("" if none)."""
    lead = []
    for segment in source[1:].split("/")[:INDEX_DEPTH] if source != "/" else ():
        if segment == "*" or segment.startswith("{"):
            break
        lead.append(segment)
    return sys.intern("/" + "/".join(lead)) if lead else ""


def route_order(route: CompiledRoute) -> tuple[int, str]:
    """Sort key: longest ``route_prefix`` first, then by prefix, so the order never depends on row order."""
    return (-len(route.route_prefix), route.route_prefix)


def entry_specificity(entry: CompiledEntry) -> tuple[int, bool, int, str, str]:
    """Sort key putting the most specific whitelist entry first.

    More literal segments first; at equal count an exact pattern before a ``/*``
    subtree, then the longer pattern; the source, then the id, break ties so the order
    is the same however the entries were read.
    """
    source = entry.pattern.source
    return (-entry.pattern.literal_segments, source.endswith("*"), -len(source), source, entry.id)


# Compiled patterns and name sets are immutable, so equal ones are shared by every entry.
_patterns: dict[str, PathPattern] = {}
_name_sets: dict[tuple[str, ...], frozenset[str]] = {}


def _pattern(source: str) -> PathPattern:
    pattern = _patterns.get(source)
    if pattern is None:
        if len(_patterns) > 200_000:  # bounded: patterns of deleted entries are dropped now and then
            _patterns.clear()
        pattern = _patterns[source] = compile_pattern(source)
    return pattern


def _names(values: Iterable[str] | None) -> frozenset[str]:
    key = tuple(values or ())
    names = _name_sets.get(key)
    if names is None:
        if len(_name_sets) > 10_000:
            _name_sets.clear()
        names = _name_sets[key] = frozenset(sys.intern(v) for v in key)
    return names


def _stream(values) -> Iterator[T]:  # type: ignore[no-untyped-def]  # a values_list QuerySet
    """Iterate rows; in a whole compile without holding a table in memory (a server-side cursor on PostgreSQL).

    The few rows a change re-reads are fetched at once: a server-side cursor would
    cost three more round trips per query.
    """
    if not _whole_compile.get():
        return iter(values)
    return values.iterator(chunk_size=ROW_CHUNK)  # type: ignore[no-any-return]  # QuerySet rows


_whole_compile: ContextVar[bool] = ContextVar("whole_compile", default=False)


def _cooperative(rows: Iterable[T]) -> Iterator[T]:
    """Yield ``rows``, letting other greenlets (requests) run every ``YIELD_EVERY_ROWS`` rows.

    ``time.sleep(0)`` is gevent's cooperative yield once gevent has patched the process,
    and a release of the GIL otherwise.
    """
    for count, row in enumerate(rows, 1):
        if count % YIELD_EVERY_ROWS == 0:
            time.sleep(0)
        yield row
