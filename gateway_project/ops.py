"""The operations endpoints: liveness, readiness and metrics (SPEC §8).

``/healthz`` answers while the process runs. ``/readyz`` checks the database, the
cache, the broker and the loaded snapshot at the same time, each bounded by
``READY_TIMEOUT_S``, and names what failed; a load balancer takes a node out of
rotation on 503. A gateway whose database went away keeps serving its snapshot
(liveness stays 200) while readiness reports the database, and after ``STALE_AFTER_S``
the snapshot as ``stale: <why>``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

# Seconds each check may take. A probe is repeated every few seconds; a slow answer is
# as bad as none for a load balancer, and the database's own connect timeout is longer.
READY_TIMEOUT_S = 2.0
# A gateway worker whose watcher has not confirmed the config version for this long is not ready (SPEC §6).
STALE_AFTER_S = 5.0
_MAX_REASON_CHARS = 200


@dataclass(frozen=True, slots=True)
class ReadinessTargets:
    """What the checks talk to, read from settings once per process."""

    broker_url: str
    broker_transport_options: Mapping[str, object]
    broker_dir: Path
    secrets: tuple[str, ...]  # passwords that must never appear in a reason


@cache
def readiness_targets() -> ReadinessTargets:
    """Return the broker and credentials to check, from settings (once)."""
    from django.conf import settings

    urls = [settings.CELERY_BROKER_URL, settings.REDIS_URL or "", settings.DATABASE_URL or ""]
    secrets = [_password_of(url) for url in urls if "@" in url]
    secrets.append(settings.DATABASES["default"].get("PASSWORD") or "")
    return ReadinessTargets(
        broker_url=settings.CELERY_BROKER_URL,
        broker_transport_options=dict(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}),
        broker_dir=Path(settings.CELERY_BROKER_DIR),
        secrets=tuple(sorted({s for s in secrets if s}, key=len, reverse=True)),
    )


def _password_of(url: str) -> str:
    try:
        return unquote(urlsplit(url).password or "")
    except ValueError:  # not a URL we can parse: nothing to mask, the check will say why
        return ""


def check_database() -> None:
    """Run ``SELECT 1`` on a fresh connection (closed afterwards, so a dead one is not reused)."""
    from django.db import connections

    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()


def check_cache() -> None:
    """Write and read back a short-lived key in the default cache (Redis when configured)."""
    from django.core.cache import caches

    cache_ = caches["default"]
    key = f"readyz:{uuid.uuid4().hex}"
    cache_.set(key, "1", timeout=10)
    if cache_.get(key) != "1":
        raise RuntimeError("a value written was not read back")
    cache_.delete(key)


def check_broker() -> None:
    """Connect to the broker; for ``filesystem://``, check its folders are usable."""
    targets = readiness_targets()
    if targets.broker_url.startswith("filesystem://"):
        _check_broker_folders(targets)
        return
    from kombu import Connection

    with Connection(
        targets.broker_url,
        connect_timeout=READY_TIMEOUT_S,
        transport_options=dict(targets.broker_transport_options),
    ) as connection:
        connection.ensure_connection(max_retries=0, timeout=READY_TIMEOUT_S)


def _check_broker_folders(targets: ReadinessTargets) -> None:
    options = targets.broker_transport_options
    folders = {
        str(options[name])
        for name in ("data_folder_in", "data_folder_out", "processed_folder")
        if isinstance(options.get(name), str | Path)
    } or {str(targets.broker_dir)}
    for folder in sorted(folders):
        if not os.path.isdir(folder):
            raise RuntimeError(f"folder {folder} does not exist")
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            raise RuntimeError(f"folder {folder} is not readable and writable")


class SnapshotStale(Exception):
    """The snapshot in force was not confirmed current recently; reported as ``stale: <why>``."""


def check_snapshot() -> None:
    """Require a loaded snapshot, confirmed current within ``STALE_AFTER_S`` where a watcher follows changes.

    Raises SnapshotStale when this process's watcher has not confirmed the config
    version for longer than that (SPEC §6): a database that hangs or went away, or a
    reload that keeps failing; the reason is the last reload error.
    """
    from gateway_core import snapshot
    from routing import reload, watcher

    if snapshot.installed() is None:
        try:
            reload.load_now()
        except Exception as exc:
            raise RuntimeError(f"no configuration snapshot loaded ({type(exc).__name__})") from None
        return
    if not watcher.running():
        return  # the admin panel follows only its own writes; nothing can go stale there
    status = reload.snapshot_status()
    confirmed_at = status.checked_at or status.loaded_at
    age_s = (datetime.now(tz=UTC) - confirmed_at).total_seconds() if confirmed_at else float("inf")
    if age_s > STALE_AFTER_S:
        why = status.last_error or "the config watcher is waiting on the database"
        raise SnapshotStale(f"config version not confirmed for {age_s:.1f}s ({why})")


CHECKS: tuple[tuple[str, Callable[[], None]], ...] = (
    ("database", check_database),
    ("cache", check_cache),
    ("broker", check_broker),
    ("snapshot", check_snapshot),
)

_executor: list[tuple[int, ThreadPoolExecutor]] = []
_executor_lock = threading.Lock()


def _checks_executor() -> ThreadPoolExecutor:
    # One pool per process, made after gunicorn's fork (a pool inherited from the master has no threads).
    with _executor_lock:
        if not _executor or _executor[0][0] != os.getpid():
            _executor[:] = [(os.getpid(), ThreadPoolExecutor(max_workers=8, thread_name_prefix="readyz"))]
        return _executor[0][1]


def run_checks(
    checks: tuple[tuple[str, Callable[[], None]], ...] = CHECKS, timeout_s: float = READY_TIMEOUT_S
) -> dict[str, str]:
    """Run ``checks`` concurrently; return ``{name: "ok" | "error: <why>"}`` within ``timeout_s``."""
    executor = _checks_executor()
    futures: dict[str, Future[None]] = {name: executor.submit(check) for name, check in checks}
    wait_futures(futures.values(), timeout=timeout_s)
    results: dict[str, str] = {}
    for name, future in futures.items():
        if not future.done():
            future.cancel()
            results[name] = f"error: no answer within {timeout_s:g}s"
            continue
        exc = future.exception()
        if exc is None:
            results[name] = "ok"
        else:
            results[name] = f"{'stale' if isinstance(exc, SnapshotStale) else 'error'}: {describe_failure(exc)}"
    return results


def describe_failure(exc: BaseException) -> str:
    """Return a one-line reason for ``exc`` with any configured password masked."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in readiness_targets().secrets:
        text = text.replace(secret, "***")
    text = re.sub(r"://[^/@\s:]*:[^/@\s]*@", "://***@", text)  # any other user:password@ in a URL
    return text[:_MAX_REASON_CHARS]


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Answer 200 while the process runs."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Answer 200 when every dependency answers and a snapshot is loaded, else 503 naming the failures."""
    checks = run_checks()
    ready = all(result == "ok" for result in checks.values())
    if not ready:
        logger.warning("not ready", extra={"checks": checks})
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Answer ``GET /metrics``: every worker of this gunicorn, in Prometheus text format."""
    from gateway_core.metrics import exposition

    body, content_type = exposition()
    return HttpResponse(body, content_type=content_type)
