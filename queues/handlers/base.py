"""What a handler receives, the errors it raises, and the HTTP helper the HTTP handlers share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import requests


class HandlerError(Exception):
    """Base of the errors a handler raises on purpose; the message is shown to the caller."""


class InvalidPayload(HandlerError):
    """The task body is not what this handler accepts; it fails at once, no retry."""


class PermanentError(HandlerError):
    """The task cannot succeed (a provider refused it, a setting is missing); no retry."""


class TransientError(HandlerError):
    """A temporary failure (network, provider 5xx); retried with backoff."""


@dataclass(frozen=True, slots=True)
class TaskInput:
    """One task as a handler sees it (the message fields a handler may use)."""

    task_id: str
    queue: str
    body: object
    application_id: str | None = None
    request_id: str = ""
    method: str = "POST"
    path: str = ""
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    received_at: str = ""
    attempt: int = 1


def require_object(body: object) -> Mapping[str, object]:
    """Return ``body`` when it is a JSON object; raise InvalidPayload otherwise."""
    if not isinstance(body, Mapping):
        raise InvalidPayload("the body must be a JSON object")
    return body


def require_string(body: Mapping[str, object], name: str, *, max_length: int = 10_000) -> str:
    """Return the non-empty string ``body[name]``; raise InvalidPayload otherwise."""
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidPayload(f"{name!r} is required and must be a non-empty string")
    if len(value) > max_length:
        raise InvalidPayload(f"{name!r} is longer than {max_length} characters")
    return value


def post_json(
    url: str,
    payload: object,
    *,
    task: TaskInput,
    timeout_s: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> object:
    """POST ``payload`` as JSON; return the decoded JSON answer (None for an empty one).

    Connection errors, timeouts, 429 and 5xx raise TransientError; other 4xx raise
    PermanentError (sending it again would get the same answer).
    """
    sent_headers = {"X-Request-ID": task.request_id or task.task_id, "X-Gateway-Task-ID": task.task_id}
    sent_headers.update(headers or {})
    try:
        response = requests.post(url, json=payload, headers=sent_headers, timeout=timeout_s, allow_redirects=False)
    except requests.RequestException as exc:
        raise TransientError(f"{exc.__class__.__name__} calling the provider") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientError(f"provider answered {response.status_code}")
    if response.status_code >= 400:
        raise PermanentError(f"provider refused the task with {response.status_code}")
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return {"text": response.text[:10_000]}
