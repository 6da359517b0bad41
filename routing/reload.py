"""Config propagation: a version row, change signals, cross-process notification, the swap (SPEC §6).

Every write to the five tables ends in ``request_reload()`` (Django signals call it once
per committed transaction; the admin API, imports and ``manage.py gateway_reload`` call
it directly). It bumps the one-row ``gateway_config_revision`` and notifies every
gateway process: Redis pub/sub when ``REDIS_URL`` is set, else PostgreSQL
``LISTEN/NOTIFY`` on PostgreSQL. Each gateway worker runs one background watcher that
wakes on a notification or every ``GATEWAY_RELOAD_POLL_S`` (default 0.5 s), reads the
version (one indexed single-row query) and, when it changed, compiles a new snapshot
and swaps it in. The poll is the safety net for SQLite, lost notifications and
restarted brokers, so a change is served everywhere within poll interval + compile
time even when no notification arrives. When the database cannot be read, the last
good snapshot stays in force and ``snapshot_status()`` reports the error.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from django.db import connections, models, transaction
from django.db.models import F
from django.db.models.functions import Now

from gateway_core import snapshot
from gateway_core.models import TimestampedModel
from gateway_core.snapshot import Snapshot, SnapshotUnavailable
from routing.compiler import compile_snapshot

logger = logging.getLogger("gateway.reload")

REVISION_ROW_ID = uuid.UUID(int=1)
CHANNEL = "gateway_config"  # Redis pub/sub channel and PostgreSQL LISTEN channel


class ConfigRevision(TimestampedModel):
    """The one row holding the configuration version every gateway process compares against."""

    version = models.BigIntegerField(default=1)

    class Meta:
        app_label = "routing"
        db_table = "gateway_config_revision"
        verbose_name = "configuration revision"

    def __str__(self) -> str:
        return f"config v{self.version}"


class SnapshotStatus(NamedTuple):
    """What /readyz and /admin/cache report about this process's snapshot."""

    loaded: bool
    version: int | None
    loaded_at: datetime | None
    last_error: str | None  # the last failed reload, cleared by the next good one
    checked_at: datetime | None  # the last time the version was read successfully


# --- The version row ----------------------------------------------------------------------


def revision_read() -> int:
    """Return the current configuration version (0 before the first migration row)."""
    version = ConfigRevision.objects.filter(id=REVISION_ROW_ID).values_list("version", flat=True).first()
    return int(version or 0)


def revision_bump() -> int:
    """Increment the configuration version and return the new value."""
    with transaction.atomic():
        updated = ConfigRevision.objects.filter(id=REVISION_ROW_ID).update(version=F("version") + 1, updated_at=Now())
        if not updated:
            ConfigRevision.objects.get_or_create(id=REVISION_ROW_ID, defaults={"version": 1})
            ConfigRevision.objects.filter(id=REVISION_ROW_ID).update(version=F("version") + 1, updated_at=Now())
        version = revision_read()
        if connections["default"].vendor == "postgresql":
            with connections["default"].cursor() as cursor:
                # Delivered at commit, so a listener never reads the old version.
                cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(version)])
    return version


# --- Requesting a reload ----------------------------------------------------------------------


def request_reload() -> None:
    """Bump the config version and notify every process of every node.

    Inside a transaction the bump waits for the commit (and happens once per
    transaction, however many rows changed); a rolled-back transaction bumps nothing.
    """
    conn = connections["default"]
    if conn.in_atomic_block:
        if not any(isinstance(func, _PendingReload) and not func.done for _, func, _ in conn.run_on_commit):
            transaction.on_commit(_PendingReload())
        return
    reload_now()


class LocalWatcher(Protocol):
    def alive(self) -> bool: ...
    def wake(self) -> None: ...


_local_watcher: LocalWatcher | None = None  # this process's watcher (routing.watcher), if any


def attach_watcher(watcher: LocalWatcher | None) -> None:
    """Let ``reload_now`` wake this process's watcher instead of refreshing inline."""
    global _local_watcher
    _local_watcher = watcher


class _PendingReload:
    """The on-commit callback of one transaction; ``done`` once run (dedupes the registrations)."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def __call__(self) -> None:
        self.done = True
        reload_now()


def reload_now() -> int:
    """Bump the version and notify now, whatever the transaction state; return the new version."""
    version = revision_bump()
    _publish(version)
    watcher = _local_watcher
    if watcher is not None and watcher.alive():
        watcher.wake()
    elif snapshot.installed() is not None:
        # No watcher here (admin panel, shell, tests): refresh this process directly.
        refresh(force=True)
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
    request_reload()


def on_config_deleted(sender: type[models.Model], instance: models.Model, **kwargs: object) -> None:
    """post_delete receiver: a deletion requests a reload."""
    request_reload()


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
    """Load a new snapshot when the version changed (or ``force``); return True if swapped.

    Raises the database error when the tables cannot be read; the snapshot in force
    is left untouched in that case.
    """
    global _last_error, _checked_at
    with _lock:
        try:
            installed = snapshot.installed()
            version = revision_read()
            _checked_at = datetime.now(tz=UTC)
            if not force and installed is not None and installed.version == version:
                _last_error = None
                return False
            new = _compile_consistent()
        except Exception as exc:
            _last_error = f"{type(exc).__name__}: {exc}"
            _close_connection()
            raise
        snapshot.install(new)
        _last_error = None
    return True


def _compile_consistent() -> Snapshot:
    """Read the version and the five tables in one transaction (one consistent view)."""
    conn = connections["default"]
    outermost = not conn.in_atomic_block
    with transaction.atomic():
        if conn.vendor == "postgresql" and outermost:
            with conn.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return compile_snapshot(revision_read())


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
