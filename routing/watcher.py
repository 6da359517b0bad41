"""The per-process config watcher: wait for a change notification or the poll, then refresh (SPEC §6).

Each gateway worker runs one ``Watcher`` (a greenlet under gevent). It waits on the
notification channel (Redis pub/sub, PostgreSQL ``LISTEN``, or nothing on SQLite) for at
most ``GATEWAY_RELOAD_POLL_S``, then asks ``routing.reload.refresh()`` whether the
version moved. The compile and swap live in ``routing.reload``; this module only decides
when to look. A database that hangs stalls a check at most ``GATEWAY_DB_TIMEOUT_S`` (every
wait on PostgreSQL is bounded, ``gateway_project.database``): the check fails, the
connection is dropped and the next check reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

from django.db import connections

from gateway_core import snapshot
from routing import reload
from routing.reload import CHANNEL, refresh

logger = logging.getLogger("gateway.reload")

RETRY_AFTER_ERROR_S = 1.0
CHANNEL_RETRY_S = 10.0  # after a notification channel failure, poll only for this long


class Listener:
    """Waits for a change notification; ``wait`` returns after one arrives or ``timeout_s``."""

    def wait(self, timeout_s: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection."""


class RedisListener(Listener):
    """Redis pub/sub on CHANNEL (shared by every node using the same Redis)."""

    def __init__(self, url: str) -> None:
        import redis

        # The health check pings an idle subscription, so a silently dead connection is noticed.
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, socket_keepalive=True, health_check_interval=30
        )
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(CHANNEL)

    def wait(self, timeout_s: float) -> None:
        if self.pubsub.get_message(timeout=timeout_s) is not None:
            while self.pubsub.get_message(timeout=0) is not None:
                pass  # coalesce a burst of changes into one reload

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


class PostgresListener(Listener):
    """PostgreSQL LISTEN on CHANNEL over a dedicated autocommit connection.

    psycopg waits with ``select`` when gevent has patched the process, so this
    blocks only the watcher greenlet.
    """

    def __init__(self) -> None:
        import psycopg

        db = connections["default"]
        # The settings' connection parameters (timeouts, keepalives), outside the pool: a
        # LISTEN must stay on one connection. Its waits are bounded like the pool's.
        params = db.get_connection_params()
        pool = db.settings_dict["OPTIONS"].get("pool")
        connection_class = (
            pool.get("connection_class", psycopg.Connection) if isinstance(pool, dict) else psycopg.Connection
        )
        params.pop("cursor_factory", None)
        self.conn = connection_class.connect(autocommit=True, **params)
        self.conn.execute(f"LISTEN {CHANNEL}")

    def wait(self, timeout_s: float) -> None:
        for _ in self.conn.notifies(timeout=timeout_s, stop_after=1):
            break

    def close(self) -> None:
        self.conn.close()


class SleepListener(Listener):
    """No notification channel (SQLite without Redis): just the poll interval."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def wait(self, timeout_s: float) -> None:
        self.event.wait(timeout_s)
        self.event.clear()

    def close(self) -> None:
        self.event.set()


def listener_for_settings() -> Listener:
    """Pick the notification channel: Redis when configured, else PostgreSQL, else none."""
    from django.conf import settings

    if getattr(settings, "REDIS_URL", None):
        return RedisListener(settings.REDIS_URL)
    if connections["default"].vendor == "postgresql":
        return PostgresListener()
    return SleepListener()


class Watcher:
    """The background loop of one process: wait for a notification or the poll, then refresh.

    Under gevent workers the thread is a greenlet (threading is monkey-patched).
    """

    def __init__(self, poll_s: float, make_listener: Callable[[], Listener] = listener_for_settings) -> None:
        self.poll_s = poll_s
        self.make_listener = make_listener
        self.pid = os.getpid()
        self.stopped = threading.Event()
        self._wake = threading.Event()
        self.thread = threading.Thread(target=self.run, name="gateway-config-watcher", daemon=True)

    def start(self) -> Watcher:
        self.thread.start()
        return self

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.thread.is_alive()

    def wake(self) -> None:
        """Check the version now (a change made in this very process)."""
        self._wake.set()

    def stop(self) -> None:
        self.stopped.set()
        self._wake.set()

    def run(self) -> None:
        listener: Listener | None = None
        retry_channel_at = 0.0  # while polling only: when to try the notification channel again
        while not self.stopped.is_set():
            try:
                if listener is None or (retry_channel_at and time.monotonic() >= retry_channel_at):
                    if listener is not None:
                        _close_quietly(listener)
                    listener, retry_channel_at = None, 0.0
                    listener = self.make_listener()
                if self._wake.is_set():
                    self._wake.clear()
                else:
                    listener.wait(self.poll_s)
            except Exception as exc:  # poll only for a while; propagation stays bounded by the poll
                logger.warning("config notification channel failed (%s); polling only", type(exc).__name__)
                if listener is not None:
                    _close_quietly(listener)
                listener, retry_channel_at = SleepListener(), time.monotonic() + CHANNEL_RETRY_S
            self._check()
        if listener is not None:
            _close_quietly(listener)
        connections.close_all()  # this thread's database connection

    def _check(self) -> None:
        try:
            if refresh():
                installed = snapshot.installed()
                logger.info(
                    "config snapshot loaded",
                    extra={"config_version": installed and installed.version, "pid": os.getpid()},
                )
        except Exception as exc:  # keep serving the last good snapshot
            logger.warning("config reload failed, serving the last good snapshot: %s", type(exc).__name__)
            self.stopped.wait(RETRY_AFTER_ERROR_S)
        finally:
            # Between checks the watcher holds no pooled connection: requests share the pool.
            # A wait on a hung one ended within GATEWAY_DB_TIMEOUT_S and closed it.
            with contextlib.suppress(Exception):
                connections["default"].close()


def _close_quietly(listener: Listener) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection
        listener.close()


_watcher: Watcher | None = None
_watcher_lock = threading.Lock()


def start_watcher() -> Watcher:
    """Start this process's watcher once (again after a fork); return it."""
    global _watcher
    with _watcher_lock:
        if _watcher is None or not _watcher.alive():
            from gateway_core.conf import gateway_config

            _watcher = Watcher(poll_s=gateway_config().reload_poll_s).start()
            reload.attach_watcher(_watcher)
        return _watcher


def running() -> bool:
    """Return True when this process runs a watcher (a gateway worker, not the admin panel)."""
    current = _watcher
    return current is not None and current.alive()


def stop_watcher() -> None:
    """Stop this process's watcher (tests)."""
    global _watcher
    with _watcher_lock:
        if _watcher is not None:
            _watcher.stop()
            _watcher = None
            reload.attach_watcher(None)
