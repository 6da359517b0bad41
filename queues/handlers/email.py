"""Default ``email`` handler: validate ``{to, subject, text|html}`` and send it (EMAIL_URL)."""

from __future__ import annotations

import smtplib

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email

from queues.handlers.base import InvalidPayload, TaskInput, TransientError, require_object, require_string

MAX_RECIPIENTS = 50


def handle(task: TaskInput) -> dict[str, object]:
    """Send the email; return ``{"sent": n, "to": [...]}``.

    ``to`` is an address or a list of addresses; ``text`` and/or ``html`` is the body
    (html-only mail gets no plain-text part); ``from`` is optional (DEFAULT_FROM_EMAIL).
    """
    body = require_object(task.body)
    recipients = _recipients(body.get("to"))
    subject = require_string(body, "subject", max_length=998)
    if "\n" in subject or "\r" in subject:
        raise InvalidPayload("'subject' must be one line")
    text, html = body.get("text"), body.get("html")
    if not (isinstance(text, str) and text) and not (isinstance(html, str) and html):
        raise InvalidPayload("'text' or 'html' is required")
    sender = body.get("from") or settings.DEFAULT_FROM_EMAIL
    if not isinstance(sender, str):
        raise InvalidPayload("'from' must be a string")
    message = EmailMultiAlternatives(
        subject=subject,
        body=text if isinstance(text, str) else "",
        from_email=sender,
        to=recipients,
        headers={"X-Gateway-Task-ID": task.task_id},
    )
    if isinstance(html, str) and html:
        if isinstance(text, str) and text:
            message.attach_alternative(html, "text/html")
        else:
            message.body = html
            message.content_subtype = "html"
    try:
        sent = message.send(fail_silently=False)
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
        raise TransientError(f"mail server unavailable: {exc.__class__.__name__}") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        raise InvalidPayload("every recipient was refused") from exc
    return {"sent": sent, "to": recipients}


def _recipients(value: object) -> list[str]:
    addresses = [value] if isinstance(value, str) else value
    if not isinstance(addresses, list) or not addresses or len(addresses) > MAX_RECIPIENTS:
        raise InvalidPayload(f"'to' must be an address or a list of 1-{MAX_RECIPIENTS} addresses")
    for address in addresses:
        try:
            validate_email(address)
        except (ValidationError, TypeError):
            raise InvalidPayload(f"'to' holds an invalid address: {str(address)[:100]!r}") from None
    return list(addresses)
