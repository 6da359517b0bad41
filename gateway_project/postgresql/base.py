"""Django's PostgreSQL backend, failing fast while the database refuses connections.

psycopg's pool makes new connections in the background, and a request waits up to
``GATEWAY_DB_POOL_TIMEOUT_S`` for one even when the server refuses every attempt at
once. Here a request waits in steps of ``STEP_S`` and gives up as soon as the last
attempt to connect failed (``database.connect_failing()``): the admin API's 503 and
the watcher's "serving the last good snapshot" come within a step, not after the
pool's full timeout, while a busy pool still gets its full timeout.
"""

from __future__ import annotations

import time

from django.db.backends.postgresql import base
from psycopg_pool import PoolTimeout

from gateway_project import database

STEP_S = 0.25


class DatabaseWrapper(base.DatabaseWrapper):
    """The stock wrapper, with a pooled connection awaited only while connecting still works."""

    def get_new_connection(self, conn_params: dict) -> object:
        pool = self.pool
        if pool is not None:
            pool.open()
            deadline = time.monotonic() + pool.timeout
            while True:
                try:
                    connection = pool.getconn(timeout=max(0.01, min(STEP_S, deadline - time.monotonic())))
                except PoolTimeout:
                    if database.connect_failing() or time.monotonic() >= deadline:
                        raise  # an OperationalError: Django wraps it
                    continue
                # Back at once: the stock path below takes it (or another idle one) again.
                pool.putconn(connection)
                break
        return super().get_new_connection(conn_params)
