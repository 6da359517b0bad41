"""Default ``ai`` handler: POST the body to AI_SERVICE_URL and keep its JSON answer."""

from __future__ import annotations

from gateway_core.conf import gateway_config
from queues.handlers.base import PermanentError, TaskInput, post_json

AI_TIMEOUT_S = 120.0  # model calls are slow; the worker, not a client, is waiting


def handle(task: TaskInput) -> object:
    """Return the AI service's JSON answer to the task body (stored as the result)."""
    url = gateway_config().ai_service_url
    if not url:
        raise PermanentError("AI_SERVICE_URL is not set")
    return post_json(url, task.body, task=task, timeout_s=AI_TIMEOUT_S)
