"""Default ``sms`` handler: validate ``{to, message}`` and POST it to SMS_PROVIDER_URL."""

from __future__ import annotations

import logging
import re

from gateway_core.conf import gateway_config
from queues.handlers.base import InvalidPayload, TaskInput, post_json, require_object, require_string

logger = logging.getLogger(__name__)

_PHONE = re.compile(r"\+?[0-9]{6,15}\Z")
MAX_MESSAGE_CHARS = 1600  # ten concatenated SMS segments


def handle(task: TaskInput) -> dict[str, object]:
    """POST ``{"to", "message"}`` to the provider; without SMS_PROVIDER_URL, only log it.

    ``to`` is a phone number in E.164 form (``+4915112345678``; spaces and dashes are
    removed). Returns ``{"to", "provider": <its JSON answer>}`` or ``{"to", "logged": true}``.
    """
    body = require_object(task.body)
    to = re.sub(r"[\s\-()]", "", require_string(body, "to", max_length=32))
    if not _PHONE.match(to):
        raise InvalidPayload("'to' must be a phone number such as +4915112345678")
    text = require_string(body, "message", max_length=MAX_MESSAGE_CHARS)
    url = gateway_config().sms_provider_url
    if not url:
        # Development: no provider configured. The number is partly masked in the log.
        logger.info("sms not sent (SMS_PROVIDER_URL unset)", extra={"task_id": task.task_id, "to": _mask(to)})
        return {"to": to, "logged": True}
    answer = post_json(url, {"to": to, "message": text}, task=task)
    return {"to": to, "provider": answer}


def _mask(number: str) -> str:
    return number[:4] + "*" * max(len(number) - 6, 0) + number[-2:]
