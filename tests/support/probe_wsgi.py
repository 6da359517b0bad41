"""The real gateway WSGI app with two test probes, for integration tests only.

- every response carries ``X-Probe-Worker: <pid>``, so a test can tell which gunicorn
  worker answered;
- database queries run while a request is being served (not by background work such
  as the config watcher) are counted per worker and written to
  ``$PROBE_DIR/queries-<pid>``; ``GET /__probe__/query`` runs one query on the request
  path so a test can check that the counter really counts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from django.db.backends import utils

from gateway_project.wsgi import application as gateway_application

_local = threading.local()  # greenlet-local under gevent workers
_queries = 0
PROBE_DIR = Path(os.environ["PROBE_DIR"]) if os.environ.get("PROBE_DIR") else Path.cwd() / "var"


def _record_query() -> None:
    global _queries
    if getattr(_local, "in_request", False):
        _queries += 1
        (PROBE_DIR / f"queries-{os.getpid()}").write_text(str(_queries))


def _counting(method: Callable[..., Any]) -> Callable[..., Any]:
    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        _record_query()
        return method(self, *args, **kwargs)

    return counted


for _name in ("execute", "executemany", "callproc"):
    setattr(utils.CursorWrapper, _name, _counting(getattr(utils.CursorWrapper, _name)))


class _InRequest:
    """Iterate the wrapped response with the request flag set (bodies stream after the call)."""

    def __init__(self, result: Iterable[bytes]) -> None:
        self.result = result

    def __iter__(self) -> Iterator[bytes]:
        iterator = iter(self.result)
        while True:
            _local.in_request = True
            try:
                block = next(iterator)
            except StopIteration:
                return
            finally:
                _local.in_request = False
            yield block

    def close(self) -> None:
        _local.in_request = True
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            _local.in_request = False


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    pid = str(os.getpid())

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, ("X-Probe-Worker", pid)], exc_info)

    if environ.get("PATH_INFO") == "/__probe__/query":
        from django.db import connection

        _local.in_request = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            _local.in_request = False
        start("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    _local.in_request = True
    try:
        result = gateway_application(environ, start)
    finally:
        _local.in_request = False
    return _InRequest(result)
