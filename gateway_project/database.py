"""Bounded PostgreSQL connections: a small pool per process, and no wait on the database without an end.

A gateway worker serves thousands of client connections from a few greenlets' worth
of database work, so it must never hold a connection per client (SPEC §6) nor wait
forever on one that hangs (a failover behind a virtual IP leaves the old connection
silent: no answer, no reset). Two parts:

- ``pool_options``: psycopg's pool through Django's ``OPTIONS["pool"]``, at most
  ``GATEWAY_DB_POOL_SIZE`` (2) connections per process, each request taking one only
  while it runs queries; waiting more than ``GATEWAY_DB_POOL_TIMEOUT_S`` (3) for one is
  an ``OperationalError`` the gateway answers with 503.
- ``gateway_project.postgresql``: the stock backend, except that while connecting
  fails a request waits at most one step (0.25 s) for a pooled connection, not the
  full pool timeout.
- ``BoundedConnection``: every answer the client waits for (a query, a commit) is
  awaited at most ``GATEWAY_DB_TIMEOUT_S`` (4; the class default below, 5, applies
  only where settings did not set it); then the connection is closed (its
  state is unknown) and ``OperationalError`` raised, so the caller drops it and the
  next query reconnects. The server-side ``statement_timeout`` and the TCP
  keepalives / ``tcp_user_timeout`` set by ``connection_options`` end the same hang
  from the server's side and on a real network; only this client-side bound also
  covers a peer whose TCP still acknowledges but never answers.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import errors as pg_errors

_connect_failed_at: list[float] = []  # when the last attempt to connect failed; empty after a success


def connect_failing() -> bool:
    """Return True while the last attempt of this process to connect to PostgreSQL failed."""
    return bool(_connect_failed_at)


class BoundedConnection(psycopg.Connection):  # type: ignore[type-arg]  # rows are tuples, as Django uses them
    """A psycopg connection whose every wait for the server ends within ``answer_timeout_s``.

    Waits that name their own timeout (``notifies(timeout=...)``) keep it. On expiry
    the connection is closed, never reused, and ``OperationalError`` raised. Whether
    the last connect failed is remembered for ``connect_failing()``.
    """

    answer_timeout_s: float | None = 5.0

    @classmethod
    def connect(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            conn = super().connect(*args, **kwargs)
        except psycopg.OperationalError:
            _connect_failed_at[:] = [time.monotonic()]
            raise
        _connect_failed_at.clear()
        return conn

    def wait(self, gen: Any, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        bound = self.answer_timeout_s if timeout is None else None
        try:
            return super().wait(gen, *args, timeout=timeout if bound is None else bound, **kwargs)
        except pg_errors._WaitTimeout:
            if bound is None:
                raise
            self.pgconn.finish()  # mid-protocol: the connection cannot serve another query
            raise psycopg.OperationalError(f"no answer from the database within {bound:g}s") from None


def bounded_connection_class(answer_timeout_s: float) -> type[BoundedConnection]:
    """Return a BoundedConnection subclass waiting at most ``answer_timeout_s`` (0: no bound)."""
    return type(
        "BoundedConnection",
        (BoundedConnection,),
        {"answer_timeout_s": answer_timeout_s or None, "__module__": __name__},
    )


def connection_options(*, answer_timeout_s: float, connect_timeout_s: int = 5) -> dict[str, object]:
    """Return libpq options: connect timeout, keepalives, tcp_user_timeout, statement_timeout."""
    timeout_ms = int(answer_timeout_s * 1000)
    options: dict[str, object] = {
        "connect_timeout": connect_timeout_s,
        # A dead peer on a real network is noticed within ~10 s even on an idle connection.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
    }
    if timeout_ms > 0:
        # Unacknowledged data aborts the connection; the server abandons a query nobody awaits.
        options["tcp_user_timeout"] = timeout_ms
        options["options"] = f"-c statement_timeout={timeout_ms}"
    return options


def pool_options(*, size: int, timeout_s: float, answer_timeout_s: float) -> dict[str, object]:
    """Return Django's ``OPTIONS["pool"]``: ``size`` connections at most, opened on demand."""
    return {
        "min_size": 1,
        "max_size": size,
        "timeout": timeout_s,  # waiting for a free connection, then PoolTimeout (an OperationalError)
        "max_idle": 60.0,
        # A connection that cannot be made is retried with a growing delay; give up after 2 s
        # so that the next request starts afresh at once, rather than behind an 8 s backoff
        # when the database comes back.
        "reconnect_timeout": 2.0,
        "connection_class": bounded_connection_class(answer_timeout_s),
    }
