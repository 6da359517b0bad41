"""The embedded broker: a kombu transport on one SQLite file that redelivers what a dead worker held.

``CELERY_BROKER_URL=sqlite://`` (the default) keeps every queue in
``<GATEWAY_BROKER_DIR>/broker.sqlite3``; no server is needed, and every process of
one machine (gateway workers, Celery workers) shares it. Taking a message leases it,
as SQS does: the row becomes invisible for ``visibility_timeout`` seconds (default
30) and is deleted only when the message is acknowledged. While a worker holds a
message it renews the lease every ``visibility_timeout / 3`` seconds (from its
consumer loop, which keeps running while a pool process runs the task), so a long
task is never given to a second worker. A worker killed as a whole (SIGKILL, OOM,
power) renews nothing: its messages become visible again within
``visibility_timeout`` and another worker runs them. A rejected-with-requeue message
(and what a worker held when it shut down cleanly) is visible again at once.

A publish returns once its row is committed (WAL, ``synchronous=NORMAL``: it
survives the death of any process; an operating-system crash may lose the last
commits, as it may the filesystem broker's files). For one machine: use RabbitMQ
(or Redis) across machines.

Options (``broker_transport_options``, defaults in brackets): ``database``
[required: the file], ``visibility_timeout`` [30], ``polling_interval`` [0.25 s
between polls of an empty queue], ``busy_timeout_s`` [5, waiting for another
process's write].
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from queue import Empty

from kombu.transport import virtual

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kombu_message ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " queue TEXT NOT NULL,"
    " payload TEXT NOT NULL,"
    " visible_at REAL NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS kombu_message_ready ON kombu_message (queue, visible_at, id)",
)
ROW_ID = "sqlite_row_id"  # where a delivered message carries its row (delivery_info)


class QoS(virtual.QoS):
    """Acknowledging deletes the message's row; rejecting deletes it or makes it visible again."""

    def ack(self, delivery_tag: str) -> None:
        message = self._delivered.get(delivery_tag)
        if message is not None:
            self.channel.row_delete(message)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        message = self._delivered.get(delivery_tag)
        if message is not None:
            if requeue:
                self.channel.row_release(message)
            else:
                self.channel.row_delete(message)
        self._quick_ack(delivery_tag)

    def held_rows(self) -> list[int]:
        """Return the rows of the messages this channel holds unacknowledged."""
        dirty = self._dirty
        return [
            message.delivery_info[ROW_ID]
            for tag, message in list(self._delivered.items())
            if tag not in dirty and ROW_ID in message.delivery_info
        ]


class Channel(virtual.Channel):
    """One SQLite connection per channel; every statement is its own transaction."""

    QoS = QoS

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        options = self.connection.client.transport_options
        database = options.get("database")
        if not database:
            raise ValueError("the sqlite:// broker needs the 'database' transport option (a file path)")
        self.visibility_timeout_s = float(options.get("visibility_timeout", 30.0))
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        busy_timeout_s = float(options.get("busy_timeout_s", 5.0))
        self._db = sqlite3.connect(database, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._renewed_at = time.monotonic()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in SCHEMA:
                self._db.execute(statement)

    # --- the virtual channel's storage interface ---------------------------------------------

    def _put(self, queue: str, message: dict, **kwargs: object) -> None:
        with self._lock:
            self._db.execute("INSERT INTO kombu_message (queue, payload) VALUES (?, ?)", (queue, json.dumps(message)))

    def _get(self, queue: str, timeout: float | None = None) -> dict:
        now = time.time()
        with self._lock:
            row = self._db.execute(
                "UPDATE kombu_message SET visible_at = ? WHERE id = ("
                " SELECT id FROM kombu_message WHERE queue = ? AND visible_at <= ? ORDER BY id LIMIT 1"
                ") RETURNING id, payload",
                (now + self.visibility_timeout_s, queue, now),
            ).fetchone()
        if row is None:
            raise Empty()
        payload = json.loads(row[1])
        payload["properties"]["delivery_info"][ROW_ID] = row[0]
        return payload

    def _size(self, queue: str) -> int:
        with self._lock:
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM kombu_message WHERE queue = ? AND visible_at <= ?", (queue, time.time())
            ).fetchone()
        return int(count)

    def _purge(self, queue: str) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM kombu_message WHERE queue = ?", (queue,)).rowcount

    def _delete(self, queue: str, *args: object, **kwargs: object) -> None:
        self._purge(queue)

    def _restore(self, message: virtual.Message) -> None:
        # A message held at shutdown (or requeued): its row is still there, make it visible.
        if ROW_ID in message.delivery_info:
            self.row_release(message)
        else:
            super()._restore(message)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: object) -> virtual.Message | None:
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self.row_delete(message)  # nothing will acknowledge it
        return message

    def close(self) -> None:
        super().close()  # restores what this channel held unacknowledged
        with self._lock:
            self._db.close()

    # --- leases -----------------------------------------------------------------------------

    def row_delete(self, message: virtual.Message) -> None:
        row = message.delivery_info.get(ROW_ID)
        if row is not None:
            with self._lock:
                self._db.execute("DELETE FROM kombu_message WHERE id = ?", (row,))

    def row_release(self, message: virtual.Message) -> None:
        row = message.delivery_info.get(ROW_ID)
        if row is not None:
            with self._lock:
                self._db.execute("UPDATE kombu_message SET visible_at = 0 WHERE id = ?", (row,))

    def renew_leases(self) -> None:
        """Extend the lease of every message held, at most every third of the visibility timeout."""
        if time.monotonic() - self._renewed_at < self.visibility_timeout_s / 3:
            return
        self._renewed_at = time.monotonic()
        rows = self.qos.held_rows() if self._qos is not None else []
        if not rows:
            return
        marks = ",".join("?" * len(rows))
        with self._lock:
            self._db.execute(
                f"UPDATE kombu_message SET visible_at = ? WHERE id IN ({marks})",  # noqa: S608 - placeholders only
                (time.time() + self.visibility_timeout_s, *rows),
            )


class Transport(virtual.Transport):
    """kombu transport ``sqlite://`` (registered by :mod:`queues.topology`)."""

    Channel = Channel
    polling_interval = 0.25
    driver_type = "sqlite"
    driver_name = "sqlite3"
    # No host to name: without this, kombu warns "No hostname was supplied" on every connection.
    default_connection_params: dict[str, object] = {}

    def drain_events(self, connection: object, timeout: float | None = None) -> None:
        for channel in list(self.channels):
            channel.renew_leases()
        return super().drain_events(connection, timeout=timeout)

    def driver_version(self) -> str:
        return sqlite3.sqlite_version
