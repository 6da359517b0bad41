"""The immutable, compiled configuration snapshot every gateway process serves from (SPEC §6).

The record types here are the contract between routing, access and queues; they are
built by ``routing.compiler`` from the tables. ``current()`` returns the snapshot in
force without touching the database; ``install()`` swaps a complete new one in with
one assignment, so a request never sees a half-built config, and sends
``snapshot_installed`` so observers (metrics) learn of the swap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.dispatch import Signal

from gateway_core.patterns import PathPattern

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
    rate_limit_by: str = "application"  # or "user": per token subject for bearer-token callers
    required_scopes: frozenset[str] = frozenset()  # a bearer-token caller must hold all

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
    index: EntryIndex | None = None  # the entries by leading path; None: try them all

    def entries_for(self, path: str) -> Sequence[CompiledEntry]:
        """Return the entries that may match ``path``, most specific first."""
        return self.entries if self.index is None else self.index.candidates(path)


INDEX_DEPTH = 3  # leading path segments an entry index buckets on (/api/v1/<service>)


@dataclass(frozen=True, slots=True)
class EntryIndex:
    """Whitelist entries bucketed by their leading literal segments (at most ``INDEX_DEPTH``).

    An entry matches only paths that start with its pattern's leading literal segments,
    so a lookup reads the buckets of the path's first segments (and the "" bucket of
    patterns starting with a parameter) instead of every entry: with a thousand entries
    an application's match costs a few entries, not a thousand regular expressions.
    Each bucket holds (rank, entry) pairs in match order; ranks merge buckets back into it.
    """

    buckets: Mapping[str, tuple[tuple[int, CompiledEntry], ...]]

    def candidates(self, path: str) -> Sequence[CompiledEntry]:
        """Return the entries whose bucket ``path`` falls in, in match order."""
        buckets = self.buckets
        found = []
        bucket = buckets.get("")
        if bucket is not None:
            found.append(bucket)
        start = 0
        for _ in range(INDEX_DEPTH):
            cut = path.find("/", start + 1)
            bucket = buckets.get(path if cut < 0 else path[:cut])
            if bucket is not None:
                found.append(bucket)
            if cut < 0:
                break
            start = cut
        if not found:
            return ()
        if len(found) == 1:
            return [entry for _, entry in found[0]]
        return [entry for _, entry in sorted(pair for bucket in found for pair in bucket)]


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
class CompiledIssuer:
    """An active token issuer of an active application, with its secrets read from the environment.

    ``kind`` is ``jwks``, ``secret`` or ``introspection``. ``secret`` (the HS key) and
    ``client_secret`` (introspection credentials) come from the environment at compile
    time and are kept out of ``repr`` so they never reach a log.
    """

    id: str
    issuer: str
    application_id: str
    kind: str
    jwks_url: str | None
    introspection_url: str | None
    audiences: frozenset[str]  # empty: any
    algorithms: frozenset[str]
    user_claim: str
    scope_claim: str
    leeway_s: int
    secret: bytes | None = field(default=None, repr=False)  # HS key; None when unset in the environment
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a request needs, compiled from the five tables and the token issuers at one moment."""

    version: int
    loaded_at: datetime
    routes: tuple[CompiledRoute, ...]  # longest route_prefix first
    routes_by_prefix: Mapping[str, CompiledRoute]
    applications: Mapping[str, CompiledApplication]  # by id
    keys: Mapping[str, CompiledKey]  # by key_prefix
    public_entries: tuple[CompiledEntry, ...]  # every is_public entry of active applications
    counts: Mapping[str, int] = field(default_factory=dict)
    public_index: EntryIndex | None = None  # public_entries by leading path; None: try them all
    # The token of the change that made ``version`` (routing.reload): the next version's
    # changes are applied to this snapshot only when the database still names this token.
    lineage: str = ""
    issuers: Mapping[str, CompiledIssuer] = field(default_factory=dict)  # JWT issuers by iss
    introspection_issuers: tuple[CompiledIssuer, ...] = ()  # for opaque tokens, by iss

    def public_entries_for(self, path: str) -> Sequence[CompiledEntry]:
        """Return the public entries that may match ``path``, most specific first."""
        return self.public_entries if self.public_index is None else self.public_index.candidates(path)


# --- The snapshot in force ---------------------------------------------------------------

_current: Snapshot | None = None

# Sent after every swap with ``snapshot=``; a receiver must be cheap and must not raise.
snapshot_installed = Signal()


def current() -> Snapshot:
    """Return the snapshot in force; raise ``SnapshotUnavailable`` before the first one is installed.

    Never queries: loading is the watcher's job (``routing.reload``).
    """
    snapshot = _current
    if snapshot is None:
        raise SnapshotUnavailable("no configuration snapshot loaded yet")
    return snapshot


def install(snapshot: Snapshot) -> None:
    """Make ``snapshot`` the one in force: one assignment, atomic for every reader."""
    global _current  # the single swap point of the process
    _current = snapshot
    snapshot_installed.send(sender=Snapshot, snapshot=snapshot)


def installed() -> Snapshot | None:
    """Return the snapshot in force, or None before the first load (never queries)."""
    return _current


class SnapshotUnavailable(Exception):
    """No snapshot was ever installed in this process."""
