"""Log lines on stdout: the per-request access log and structured application logs.

``GATEWAY_LOG_FORMAT`` picks ``json`` (default: one object per line, for a log shipper)
or ``text`` (for a terminal); ``GATEWAY_LOG_LEVEL`` the level (INFO). The access log
line has exactly the SPEC §8 keys. It never carries a header value, a query string
(clients put keys there too) or the credentials of an upstream URL; error logs name
an exception's type, never its traceback, which may quote request data.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from gateway_core import tracing

if TYPE_CHECKING:
    from django.http import HttpResponseBase

    from gateway_core.context import RequestContext

ACCESS_FIELDS: tuple[str, ...] = (
    "ts",
    "request_id",
    "method",
    "path",
    "service",
    "version",
    "status",
    "duration_ms",
    "application_id",
    "upstream",
    "bytes_sent",
    # Beyond SPEC §8's list: who called when it was not an application key alone.
    "key_prefix",  # the X-API-Key's public prefix, also on a 401 (never the secret)
    "user_id",  # a bearer token's user (never the token)
    "trace_id",  # the request's trace (32 hex digits) while tracing is on, else null
)

access_logger = logging.getLogger("gateway.access")
# Built once: json.dumps with any option builds a new encoder per call, a cost paid per request.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def _timestamp(created: float) -> str:
    """Return ``created`` as ISO 8601 UTC with milliseconds (``2026-01-31T12:00:00.123Z``)."""
    global _second
    second = int(created)
    cached = _second  # one read: another thread may replace it meanwhile
    if cached[0] != second:  # a log line per request: format each second once
        cached = _second = (second, datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    milliseconds = min(round((created - second) * 1_000_000) // 1000, 999)  # as datetime rounds to µs
    return f"{cached[1]}.{milliseconds:03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRS and not key.startswith("_")}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: ts, level, logger, message and any ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(_extras(record))
        if record.exc_info:
            # Exception type only: a traceback may quote request data.
            payload["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return _ENCODER.encode(payload)


class TextFormatter(logging.Formatter):
    """Format a record as ``ts LEVEL logger: message key=value ...`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record.created), record.levelname, f"{record.name}:", record.getMessage()]
        parts.extend(f"{key}={value}" for key, value in _extras(record).items())
        if record.exc_info and record.exc_info[0]:
            parts.append(f"exc_type={record.exc_info[0].__name__}")
        return " ".join(parts)


class AccessJsonFormatter(JsonFormatter):
    """Format an access record as exactly the SPEC §8 keys."""

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if not isinstance(access, dict):
            return super().format(record)
        return _ENCODER.encode(access)


class AccessTextFormatter(TextFormatter):
    """Format an access record as ``ts method path status duration`` and the other fields."""

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if not isinstance(access, dict):
            return super().format(record)
        head = f"{access['ts']} {access['method']} {access['path']} {access['status']} {access['duration_ms']}ms"
        tail = " ".join(
            f"{key}={'-' if access[key] is None else access[key]}"
            for key in ("service", "version", "application_id", "upstream", "bytes_sent", "request_id")
        )
        return f"{head} {tail}"


def log_access(ctx: RequestContext, response: HttpResponseBase) -> None:
    """Write the access-log line of one request (SPEC §8).

    A streamed body is counted as it goes out; its line is written when the server
    closes the response, so ``bytes_sent`` and ``duration_ms`` cover the whole body.
    """
    if not access_logger.isEnabledFor(logging.INFO):
        return
    if response.streaming and not getattr(response, "is_async", False):

        def finished(sent: int) -> None:
            _emit(ctx, response.status_code, sent)

        response.streaming_content = CountingBody(response.streaming_content, finished)  # type: ignore[attr-defined]  # StreamingHttpResponse
        return
    content = getattr(response, "content", b"") if not response.streaming else b""
    _emit(ctx, response.status_code, None if response.streaming else len(content))


def access_record(ctx: RequestContext, status: int, bytes_sent: int | None) -> dict[str, object]:
    """Return the access-log fields of a finished request, in SPEC order."""
    request = ctx.request
    span = tracing.current_span() if tracing.ENABLED else None
    return {
        "ts": _timestamp(time.time()),
        "request_id": ctx.request_id,
        "method": request.method,
        "path": ctx.raw_path or request.path,
        "service": ctx.route.service_name if ctx.route is not None else None,
        "version": ctx.version.version if ctx.version is not None else None,
        "status": status,
        "duration_ms": round((time.perf_counter() - ctx.started_at) * 1000.0, 1),
        "application_id": ctx.application.id if ctx.application is not None else None,
        "upstream": without_credentials(ctx.upstream) or None,
        "bytes_sent": bytes_sent,
        "key_prefix": ctx.key_prefix or None,  # the key's public prefix, never its secret
        "user_id": ctx.user,  # a bearer token's user, never the token
        "trace_id": span.trace_id if span is not None else None,
    }


def without_credentials(url: str) -> str:
    """Return ``url`` without any ``user:password@`` part."""
    if "@" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _emit(ctx: RequestContext, status: int, bytes_sent: int | None) -> None:
    try:
        fields = access_record(ctx, status, bytes_sent)
    except Exception:  # a log line must never break a response
        logging.getLogger(__name__).exception("access log record failed")
        return
    handler = _plain_json_handler()
    if handler is not None:
        # The usual configuration (one stream, our JSON formatter, no filters): write the
        # line as the handler would, without the LogRecord and the dispatch through
        # logging, which cost more than encoding the line itself.
        line = _ENCODER.encode(fields) + "\n"
        handler.acquire()
        try:
            handler.stream.write(line)
            handler.stream.flush()
        except Exception:  # as logging does: a broken stream must not break the response
            handler.handleError(logging.LogRecord(access_logger.name, logging.INFO, __file__, 0, line, (), None))
        finally:
            handler.release()
        return
    # A record made here, not by logger.info(): the caller lookup it would do costs more
    # than the rest of the line, and the caller is always this function.
    record = logging.LogRecord(
        access_logger.name, logging.INFO, __file__, 0, "%s %s %s", (fields["method"], fields["path"], status), None
    )
    record.access = fields
    access_logger.handle(record)


def _plain_json_handler() -> logging.StreamHandler | None:  # type: ignore[type-arg]  # any stream
    """Return the access logger's handler when it is exactly one JSON stream handler with no filters.

    Checked per line (a few attribute reads), so a reconfigured logger (tests, a custom
    LOGGING) always gets the full logging path.
    """
    handlers = access_logger.handlers
    if len(handlers) != 1 or access_logger.filters:
        return None
    handler = handlers[0]
    if (
        type(handler) is not logging.StreamHandler
        or handler.filters
        or type(handler.formatter) is not AccessJsonFormatter
        or handler.level > logging.INFO
    ):
        return None
    return handler


class CountingBody:
    """Iterate a streamed body, counting bytes; call ``on_close(sent)`` once, when closed.

    A class rather than a generator: a generator never started would not run its
    ``finally`` on close (a HEAD answer, a client gone before the first chunk).
    """

    def __init__(self, chunks: Iterable[bytes], on_close: Callable[[int], None]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._on_close: Callable[[int], None] | None = on_close
        self.sent = 0

    def __iter__(self) -> CountingBody:
        return self

    def __next__(self) -> bytes:
        chunk = next(self._chunks)
        self.sent += len(chunk)
        return chunk

    def close(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self.sent)
