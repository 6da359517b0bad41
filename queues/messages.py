"""The task message schema shared by the gateway, services that publish, and workers.

Pure Python (no Django), so a service can vendor it with :mod:`queues.client`.
A message is the single keyword argument ``message`` of the Celery task
``gateway.<queue>``; it is JSON:

=================  ===========================================================
``schema``         ``1``
``task_id``        UUID string; also the Celery task id and the status id
``queue``          ``email`` | ``sms`` | ``ai`` | ``analytics`` | ``execution``
``origin``         ``gateway`` (a status row exists already) or ``service``
``request_id``     the originating request's id (``X-Request-ID``), may be ``""``
``application_id`` the calling application's id, or null (anonymous / a service)
``method``         HTTP method of the original request (``POST``)
``path``           upstream path (``upstream_prefix`` + the rest of the route)
``query``          raw query string, ``""`` when none
``headers``        a safe subset of the request headers, lower-case names
``body``           the JSON body (any JSON value)
``received_at``    ISO 8601 UTC time the gateway (or service) accepted it
``callback_url``   http(s) URL to POST the outcome to, or null
=================  ===========================================================
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

SCHEMA_VERSION = 1
ORIGINS = frozenset({"gateway", "service"})

# Request headers a worker may see. Credentials (X-API-Key, Authorization, Cookie)
# and gateway-internal headers never leave the gateway.
SAFE_HEADERS = frozenset(
    {
        "accept",
        "accept-language",
        "content-type",
        "user-agent",
        "traceparent",
        "tracestate",
        "x-request-id",
        "x-consumer-id",
        "x-consumer-name",
        "x-forwarded-for",
    }
)


class InvalidMessage(ValueError):
    """A message that does not follow the schema; it can never succeed."""


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """A validated task message (see the module docstring for each field)."""

    task_id: str
    queue: str
    body: object
    origin: str = "service"
    request_id: str = ""
    application_id: str | None = None
    method: str = "POST"
    path: str = ""
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    received_at: str = ""
    callback_url: str | None = None
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, object]:
        """Return the JSON-ready message."""
        data = asdict(self)
        data["headers"] = dict(self.headers)
        return data


def message_build(
    *,
    queue: str,
    body: object,
    origin: str = "service",
    task_id: str | None = None,
    request_id: str = "",
    application_id: str | None = None,
    method: str = "POST",
    path: str = "",
    query: str = "",
    headers: Mapping[str, str] | None = None,
    callback_url: str | None = None,
    received_at: datetime | None = None,
) -> TaskMessage:
    """Return a new message; ``headers`` are filtered to :data:`SAFE_HEADERS`.

    Raise InvalidMessage for an unknown origin or a callback URL that is not http(s).
    """
    if origin not in ORIGINS:
        raise InvalidMessage(f"origin must be one of {sorted(ORIGINS)}")
    if callback_url is not None and not is_callback_url(callback_url):
        raise InvalidMessage("callback_url must be an absolute http:// or https:// URL")
    return TaskMessage(
        task_id=task_id or str(uuid.uuid4()),
        queue=queue,
        body=body,
        origin=origin,
        request_id=request_id,
        application_id=application_id,
        method=method.upper(),
        path=path,
        query=query,
        headers=safe_headers(headers or {}),
        received_at=(received_at or datetime.now(UTC)).isoformat(),
        callback_url=callback_url,
    )


def message_parse(raw: object, queues: frozenset[str] | None = None) -> TaskMessage:
    """Validate a received message; raise InvalidMessage naming the first bad field."""
    if not isinstance(raw, Mapping):
        raise InvalidMessage("the message is not a JSON object")
    if raw.get("schema") != SCHEMA_VERSION:
        raise InvalidMessage(f"unsupported schema {raw.get('schema')!r}; expected {SCHEMA_VERSION}")
    task_id = raw.get("task_id")
    try:
        uuid.UUID(str(task_id))
    except ValueError:
        raise InvalidMessage("task_id is not a UUID") from None
    queue = raw.get("queue")
    if not isinstance(queue, str) or (queues is not None and queue not in queues):
        raise InvalidMessage(f"unknown queue {queue!r}")
    if "body" not in raw:
        raise InvalidMessage("body is missing")
    if raw.get("origin", "service") not in ORIGINS:
        raise InvalidMessage("origin is invalid")
    for name in ("request_id", "method", "path", "query", "received_at"):
        if not isinstance(raw.get(name, ""), str):
            raise InvalidMessage(f"{name} must be a string")
    application_id = raw.get("application_id")
    if application_id is not None:
        try:
            application_id = str(uuid.UUID(str(application_id)))
        except ValueError:
            raise InvalidMessage("application_id is not a UUID") from None
    headers = raw.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidMessage("headers must map strings to strings")
    callback_url = raw.get("callback_url")
    if callback_url is not None and (not isinstance(callback_url, str) or not is_callback_url(callback_url)):
        raise InvalidMessage("callback_url must be an absolute http:// or https:// URL")
    return TaskMessage(
        task_id=str(task_id),
        queue=queue,
        body=raw["body"],
        origin=raw.get("origin", "service"),
        request_id=raw.get("request_id", ""),
        application_id=application_id,
        method=raw.get("method", "POST"),
        path=raw.get("path", ""),
        query=raw.get("query", ""),
        headers=dict(headers),
        received_at=raw.get("received_at", ""),
        callback_url=callback_url,
    )


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return the headers a worker may see, names lower-cased."""
    return {name.lower(): value for name, value in headers.items() if name.lower() in SAFE_HEADERS}


def is_callback_url(url: str) -> bool:
    """Return True for an absolute ``http://`` or ``https://`` URL with a host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and len(url) <= 2048
