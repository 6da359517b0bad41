"""The immutable, compiled configuration snapshot every gateway process serves from (SPEC §6).

``current()`` returns the snapshot in force; a reload builds a complete new one and
swaps it in with one assignment, so a request never sees a half-built config.
The record types here are the contract between routing, access and queues.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from access.patterns import PathPattern


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
