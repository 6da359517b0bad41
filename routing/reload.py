"""Config propagation: a version row, change signals, cross-process notification, the swap (SPEC §6).

Every write to the five tables ends in ``request_reload()`` (Django signals call it once
per committed transaction; the admin API, imports and ``manage.py gateway_reload`` call
it directly). It bumps the one-row ``gateway_config_revision`` and notifies every
gateway process: Redis pub/sub when ``REDIS_URL`` is set, else PostgreSQL
``LISTEN/NOTIFY`` on PostgreSQL. Each gateway worker runs one background watcher that
wakes on a notification or every ``GATEWAY_RELOAD_POLL_S`` (default 0.5 s), reads the
version (one indexed single-row query) and, when it changed, builds a new snapshot
and swaps it in. The poll is the safety net for SQLite, lost notifications and
restarted brokers, so a change is served everywhere within poll interval + compile
time even when no notification arrives. When the database cannot be read, the last
good snapshot stays in force and ``snapshot_status()`` reports the error.

Each bump also records which rows changed (``gateway_config_change``: kind and id, in
the bump's transaction), so a worker one or more versions behind re-reads only those
rows and applies them to a copy of its snapshot (``routing.compiler.apply_changes``)
instead of recompiling every table. It compiles everything when it cannot be sure the
recorded changes are complete: a bump that names no rows (``gateway_reload``, the
admin's refresh, more than ``MAX_RECORDED_CHANGES`` rows), versions it has no record
of, or a database whose history is not the one its snapshot came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from django.db import connections, models, transaction
from django.db.models import F
from django.db.models.functions import Now

from gateway_core import snapshot
from gateway_core.changes import config_committed
from gateway_core.models import TimestampedModel
from gateway_core.snapshot import Snapshot, SnapshotUnavailable
from routing.compiler import Changes, apply_changes, compile_snapshot

logger = logging.getLogger("gateway.reload")

REVISION_ROW_ID = uuid.UUID(int=1)
CHANNEL = "gateway_config"  # Redis pub/sub channel and PostgreSQL LISTEN channel
MAX_RECORDED_CHANGES = 2000  # rows per bump; a larger change (an import) is recorded as "everything"
KEEP_CHANGE_VERSIONS = 1000  # versions whose changes are kept; a worker further behind compiles all
ALL = "all"  # the change kind meaning "anything may have changed"

Change = tuple[str, str]  # (kind, object id): kind is service, application, entry, key or ALL


class ConfigRevision(TimestampedModel):
    """The one row holding the configuration version every gateway process compares against."""

    version = models.BigIntegerField(default=1)

    class Meta:
        app_label = "routing"
        db_table = "gateway_config_revision"
        verbose_name = "configuration revision"

    def __str__(self) -> str:
        return f"config v{self.version}"


class ConfigChange(models.Model):
    """One row a configuration version changed, so workers can apply it instead of recompiling.

    Every bump writes at least one row; ``token`` is random per bump, so a snapshot can
    tell whether the database's version N is the one it was built from.
    """

    id = models.BigAutoField(primary_key=True)
    version = models.BigIntegerField(db_index=True)
    token = models.CharField(max_length=32)
    kind = models.CharField(max_length=16)
    object_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "routing"
        db_table = "gateway_config_change"
        verbose_name = "configuration change"

    def __str__(self) -> str:
        return f"v{self.version} {self.kind} {self.object_id}"


class SnapshotStatus(NamedTuple):
    """What /readyz and /admin/cache report about this process's snapshot."""

    loaded: bool
    version: int | None
    loaded_at: datetime | None
    last_error: str | None  # the last failed reload, cleared by the next good one
    checked_at: datetime | None  # the last time the snapshot in force was confirmed current


# --- The version row ----------------------------------------------------------------------


def revision_read() -> int:
    """Return the current configuration version (0 before the first migration row)."""
    version = ConfigRevision.objects.filter(id=REVISION_ROW_ID).values_list("version", flat=True).first()
    return int(version or 0)


def revision_bump(changes: Iterable[Change] | None = None) -> int:
    """Increment the configuration version, record ``changes`` under it, and return the new value.

    ``changes`` None (or more than ``MAX_RECORDED_CHANGES``) records "anything may have
    changed", which makes every worker compile the whole config.
    """
    rows = sorted(set(changes)) if changes is not None else [(ALL, "")]
    if len(rows) > MAX_RECORDED_CHANGES or any(kind == ALL for kind, _ in rows):
        rows = [(ALL, "")]
    with transaction.atomic():
        updated = ConfigRevision.objects.filter(id=REVISION_ROW_ID).update(version=F("version") + 1, updated_at=Now())
        if not updated:
            ConfigRevision.objects.get_or_create(id=REVISION_ROW_ID, defaults={"version": 1})
            ConfigRevision.objects.filter(id=REVISION_ROW_ID).update(version=F("version") + 1, updated_at=Now())
        version = revision_read()
        token = secrets.token_hex(16)
        ConfigChange.objects.bulk_create(
            ConfigChange(version=version, token=token, kind=kind, object_id=object_id) for kind, object_id in rows
        )
        ConfigChange.objects.filter(version__lte=version - KEEP_CHANGE_VERSIONS).delete()
        if connections["default"].vendor == "postgresql":
            with connections["default"].cursor() as cursor:
                # Delivered at commit, so a listener never reads the old version.
                cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(version)])
    return version


# --- Requesting a reload ----------------------------------------------------------------------


def request_reload(change: Change | None = None) -> None:
    """Bump the config version and notify every process of every node.

    ``change`` names the row that changed; None means anything may have (every worker
    then compiles the whole config). Inside a transaction the bump waits for the commit
    (and happens once per transaction, with every change the transaction recorded); a
    rolled-back transaction bumps nothing.
    """
    conn = connections["default"]
    if conn.in_atomic_block:
        pending = next(
            (func for _, func, _ in conn.run_on_commit if isinstance(func, _PendingReload) and not func.done), None
        )
        if pending is None:
            pending = _PendingReload()
            transaction.on_commit(pending)
        pending.record(change)
        return
    reload_now(None if change is None else [change])


class LocalWatcher(Protocol):
    def alive(self) -> bool: ...
    def wake(self) -> None: ...


_local_watcher: LocalWatcher | None = None  # this process's watcher (routing.watcher), if any


def attach_watcher(watcher: LocalWatcher | None) -> None:
    """Let ``reload_now`` wake this process's watcher instead of refreshing inline."""
    global _local_watcher
    _local_watcher = watcher


class _PendingReload:
    """The on-commit callback of one transaction; ``done`` once run (dedupes the registrations).

    ``changes`` collects what the transaction changed; None once something unnamed did.
    """

    __slots__ = ("changes", "done")

    def __init__(self) -> None:
        self.done = False
        self.changes: set[Change] | None = set()

    def record(self, change: Change | None) -> None:
        if change is None or self.changes is None or len(self.changes) >= MAX_RECORDED_CHANGES:
            self.changes = None
        else:
            self.changes.add(change)

    def __call__(self) -> None:
        self.done = True
        reload_now(self.changes)


def reload_now(changes: Iterable[Change] | None = None) -> int:
    """Bump the version and notify now, whatever the transaction state; return the new version.

    ``changes`` as for ``revision_bump``: None makes every worker compile everything.
    """
    version = revision_bump(changes)
    _publish(version)
    watcher = _local_watcher
    if watcher is not None and watcher.alive():
        watcher.wake()
    elif snapshot.installed() is not None:
        # No watcher here (admin panel, shell, tests): refresh this process directly.
        refresh()
    # Last: the config history records the change once every process has been told of it.
    config_committed.send(sender=None, version=version)
    return version


def _publish(version: int) -> None:
    from django.conf import settings

    url = getattr(settings, "REDIS_URL", None)
    if not url:
        return
    try:
        _redis_client(url).publish(CHANNEL, str(version))
    except Exception as exc:  # the poll still propagates the change
        logger.warning("config change notification failed; workers will see it on their next poll: %s", exc)


_redis_clients: dict[str, object] = {}


def _redis_client(url: str):  # type: ignore[no-untyped-def]  # redis.Redis, imported lazily
    import redis

    client = _redis_clients.get(url)
    if client is None:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        _redis_clients[url] = client
    return client


# --- Signals ---------------------------------------------------------------------------------


def on_config_saved(sender: type[models.Model], instance: models.Model, **kwargs: object) -> None:
    """post_save receiver: any change to the five tables requests a reload.

    A save touching only ``ApiKey.last_used_at`` (bookkeeping, not config) is ignored.
    """
    update_fields = kwargs.get("update_fields")
    if update_fields and set(update_fields) <= {"last_used_at", "updated_at"}:  # type: ignore[arg-type]  # frozenset of names
        return
    request_reload(change_of(instance))


def on_config_deleted(sender: type[models.Model], instance: models.Model, **kwargs: object) -> None:
    """post_delete receiver: a deletion requests a reload."""
    request_reload(change_of(instance))


# The rows whose id names what the compiler re-reads: a version's change re-reads its service.
_CHANGE_KINDS: dict[str, tuple[str, str]] = {
    "routing.ServiceConfig": ("service", "pk"),
    "routing.ServiceVersion": ("service", "service_id"),
    "access.Application": ("application", "pk"),
    "access.EndpointWhitelist": ("entry", "pk"),
    "access.ApiKey": ("key", "pk"),
}


def change_of(instance: models.Model) -> Change:
    """Return the (kind, id) a saved or deleted config row is recorded as; ALL for other tables."""
    kind = _CHANGE_KINDS.get(instance._meta.label)
    if kind is None:
        return (ALL, "")
    return (kind[0], str(getattr(instance, kind[1])))


def connect_signals() -> None:
    """Connect the receivers to the five configuration models (called from AppConfig.ready)."""
    from django.conf import settings
    from django.db.models.signals import post_delete, post_save

    from access.models import ApiKey, Application, EndpointWhitelist, TokenIssuer
    from routing.models import ServiceConfig, ServiceVersion

    if getattr(settings, "REDIS_URL", None):
        import redis  # noqa: F401 - imported now, not on the first change (a noticeable delay)

    for model in (ServiceConfig, ServiceVersion, Application, EndpointWhitelist, ApiKey, TokenIssuer):
        post_save.connect(on_config_saved, sender=model, dispatch_uid=f"gateway-reload-save-{model.__name__}")
        post_delete.connect(on_config_deleted, sender=model, dispatch_uid=f"gateway-reload-delete-{model.__name__}")


# --- Loading and swapping ---------------------------------------------------------------------

_lock = threading.Lock()
_last_error: str | None = None
_checked_at: datetime | None = None


def refresh(*, force: bool = False) -> bool:
    """Load a new snapshot when the version changed (or ``force``: compile everything); return True if swapped.

    Raises the database error when the tables cannot be read; the snapshot in force
    is left untouched in that case.
    """
    global _last_error, _checked_at
    with _lock:
        try:
            installed = snapshot.installed()
            version = revision_read()
            if not force and installed is not None and installed.version == version:
                _last_error, _checked_at = None, datetime.now(tz=UTC)
                return False
            new = _compile_consistent(None if force else installed)
        except Exception as exc:
            _last_error = f"{type(exc).__name__}: {exc}"
            _close_connection()
            raise
        snapshot.install(new)
        _last_error, _checked_at = None, datetime.now(tz=UTC)
    return True


def _compile_consistent(base: Snapshot | None) -> Snapshot:
    """Build the snapshot of the current version in one transaction (one consistent view).

    With ``base``, apply the changes recorded since its version when they are complete;
    otherwise compile everything.
    """
    conn = connections["default"]
    outermost = not conn.in_atomic_block
    with transaction.atomic():
        if conn.vendor == "postgresql" and outermost:
            with conn.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        version = revision_read()
        changes, lineage = changes_since(base, version)
        if base is not None and changes is not None:
            new = apply_changes(base, changes, version)
        else:
            new = compile_snapshot(version)
        return dataclasses.replace(new, lineage=lineage)


def changes_since(base: Snapshot | None, version: int) -> tuple[Changes | None, str]:
    """Return (what changed after ``base`` up to ``version``, the token of ``version``).

    The changes are None when they cannot be trusted to be complete: no base, a
    version that recorded "anything", a version with no record (pruned), or a base
    whose own version the database does not know by the same token (a restored or
    reset database reuses version numbers).
    """
    since = base.version if base is not None and base.lineage and base.version <= version else version
    rows = ConfigChange.objects.filter(version__gte=since, version__lte=version).values_list(
        "version", "token", "kind", "object_id"
    )
    by_kind: dict[str, set[str]] = {"service": set(), "application": set(), "entry": set(), "key": set()}
    tokens: dict[int, str] = {}
    complete = base is not None and since == base.version
    for row_version, token, kind, object_id in rows:
        tokens[row_version] = token
        if row_version == since:
            continue
        if kind not in by_kind:
            complete = False
        else:
            by_kind[kind].add(object_id)
    lineage = tokens.get(version, "")
    if not complete or base is None or tokens.get(since) != base.lineage:
        return None, lineage
    if len(tokens) != version - since + 1 or sum(map(len, by_kind.values())) > MAX_RECORDED_CHANGES:
        return None, lineage
    return Changes(
        services=frozenset(by_kind["service"]),
        applications=frozenset(by_kind["application"]),
        entries=frozenset(by_kind["entry"]),
        keys=frozenset(by_kind["key"]),
    ), lineage


def _close_connection() -> None:
    # A broken connection is dropped so the next attempt reconnects.
    with contextlib.suppress(Exception):  # best effort while the database is away
        conn = connections["default"]
        if not conn.in_atomic_block:
            conn.close()


def load_now() -> Snapshot:
    """Return the snapshot in force, loading it first if none is; raise SnapshotUnavailable."""
    try:
        refresh(force=snapshot.installed() is None)
    except Exception as exc:
        installed = snapshot.installed()
        if installed is not None:
            return installed
        logger.warning("cannot load the gateway configuration: %s", type(exc).__name__)
        raise SnapshotUnavailable(str(_last_error)) from None
    installed = snapshot.installed()
    if installed is None:  # pragma: no cover - refresh installs or raises
        raise SnapshotUnavailable("no snapshot")
    return installed


def snapshot_status() -> SnapshotStatus:
    """Return (loaded, version, loaded_at, last_error, checked_at) for this process."""
    installed = snapshot.installed()
    if installed is None:
        return SnapshotStatus(False, None, None, _last_error, _checked_at)
    return SnapshotStatus(True, installed.version, installed.loaded_at, _last_error, _checked_at)
