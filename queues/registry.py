"""Which function handles each queue: defaults, overridable by GATEWAY_QUEUE_HANDLERS.

``GATEWAY_QUEUE_HANDLERS=email=myproject.mail.send,ai=myproject.llm.run`` replaces the
handlers of those queues; each value is an import string of a function
``handle(task: TaskInput) -> result`` (see :mod:`queues.handlers`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from gateway_core.conf import gateway_config
from queues.handlers.base import TaskInput

Handler = Callable[[TaskInput], object]

DEFAULT_HANDLERS: dict[str, str] = {
    "email": "queues.handlers.email.handle",
    "sms": "queues.handlers.sms.handle",
    "ai": "queues.handlers.ai.handle",
    "analytics": "queues.handlers.analytics.handle",
    "execution": "queues.handlers.execution.handle",
}


@cache
def handler_for(queue: str) -> Handler:
    """Return the handler of ``queue``; raise ImproperlyConfigured for a bad import string."""
    path = gateway_config().queue_handlers.get(queue) or DEFAULT_HANDLERS[queue]
    try:
        handler = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"GATEWAY_QUEUE_HANDLERS: cannot import {path!r} for {queue}: {exc}") from None
    if not callable(handler):
        raise ImproperlyConfigured(f"GATEWAY_QUEUE_HANDLERS: {path!r} is not callable")
    return handler  # type: ignore[no-any-return]  # checked callable above
