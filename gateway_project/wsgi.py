"""WSGI entry point of the gateway (port 4200).

``/api/v1`` and everything below it (except ``/api/v1/tasks/``, a Django view) goes
straight to ``routing.pipeline.handle``: the pipeline needs none of Django's
middleware (sessions, CSRF, auth, messages), and skipping it is a large share of the
per-request cost. Everything else (ops endpoints, the admin API, the task status
view) goes through Django's normal handler. A database connection the pipeline opened
(a queue route's task record) is given back when the request ends.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

django_application = get_wsgi_application()

from django.core.handlers.wsgi import WSGIRequest  # noqa: E402 - after Django is set up
from django.db.backends.base.base import BaseDatabaseWrapper  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402
from django.dispatch import receiver  # noqa: E402
from django.http.response import HttpResponseBase  # noqa: E402

from gateway_core import tracing  # noqa: E402
from routing import pipeline, reload, watcher  # noqa: E402 - imports models: Django must be set up first

logger = logging.getLogger("gateway.wsgi")

StartResponse = Callable[..., Any]
API_PREFIX = "/api/v1"
DJANGO_SERVED_PREFIX = "/api/v1/tasks/"


def gateway_application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Serve ``/api/v1[/...]`` through the pipeline, anything else through Django."""
    path = environ.get("PATH_INFO", "")
    if not (path == API_PREFIX or path.startswith("/api/v1/")) or path.startswith(DJANGO_SERVED_PREFIX):
        return django_application(environ, start_response)
    if _watcher_pid != os.getpid():
        _start_background()
    request = WSGIRequest(environ)
    try:
        response = pipeline.handle(request)
    finally:
        _release_database()
    if (
        not response.streaming
        and "Content-Length" not in response
        and response.status_code not in (204, 304)
        and environ.get("REQUEST_METHOD") != "HEAD"
    ):
        # As Django's CommonMiddleware would: lets the client keep the connection without chunking.
        response.headers["Content-Length"] = str(len(response.content))
    headers = [*response.items(), *(("Set-Cookie", c.output(header="")) for c in response.cookies.values())]
    start_response(f"{response.status_code} {response.reason_phrase}", headers)
    return ResponseBody(response)


class ResponseBody:
    """The WSGI body of a pipeline response: its content, then its resource closers.

    Django's ``HttpResponse.close`` also sends ``request_finished`` (closing database
    connections, resetting the URLconf): the pipeline touches neither, so the fast
    path runs the closers (upstream connection release, the access log) and skips
    the signal, a measurable share of a proxied request's CPU.
    """

    __slots__ = ("response",)

    def __init__(self, response: HttpResponseBase) -> None:
        self.response = response

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.response)

    def close(self) -> None:
        response = self.response
        # Django has no public way to close a response without sending request_finished
        # (HttpResponseBase.close does both); its closers list is what close() runs first.
        closers = response._resource_closers
        for closer in closers:
            try:
                closer()
            except Exception as exc:
                logger.warning("closing a response failed: %s", type(exc).__name__)
        closers.clear()
        response.closed = True


_opened = threading.local()  # per greenlet under gevent: the database connections it opened


@receiver(connection_created)
def _note_connection(sender: object, connection: BaseDatabaseWrapper, **kwargs: object) -> None:
    opened: list[BaseDatabaseWrapper] | None = getattr(_opened, "connections", None)
    if opened is None:
        opened = _opened.connections = []
    if connection not in opened:  # one wrapper per alias and thread, opened again and again
        opened.append(connection)


def _release_database() -> None:
    """Give back the database connections this request opened (a queue route writes its task record).

    The fast path skips Django's ``request_finished``, which would do this; without it
    each client connection's greenlet kept its own database connection (SPEC §6:
    connections are bounded by workers, not clients). Django's ``connection_created``
    signal notes each connection the greenlet (or thread) opens, so a proxied request,
    which opens none, costs one attribute read rather than a walk of the connections.
    """
    opened: list[BaseDatabaseWrapper] | None = getattr(_opened, "connections", None)
    if not opened:
        return
    kept = []
    for conn in opened:
        if conn.connection is None:
            continue  # closed already
        if conn.in_atomic_block:
            kept.append(conn)  # still in use: given back by a later request of this greenlet
        else:
            conn.close()  # with the pool: back to it
    _opened.connections = kept


_watcher_pid = 0


def _start_background() -> None:
    """Start this worker's config watcher and load the first snapshot (once per process)."""
    global _watcher_pid
    _watcher_pid = os.getpid()
    tracing.setup()  # per process: a gunicorn worker gets its own exporter after the fork
    watcher.start_watcher()
    try:
        reload.load_now()
    except Exception as exc:  # the pipeline answers 503 until the database is back
        logger.warning("gateway configuration not loaded at start: %s", type(exc).__name__)


application = gateway_application
_start_background()
