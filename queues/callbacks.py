"""Signed completion callbacks: POST the outcome to the client's X-Callback-URL (SPEC §5).

The body is compact JSON ``{"task_id", "status", "result", "error"}``; the header
``X-Gateway-Signature: sha256=<hex>`` is the HMAC-SHA256 of exactly those bytes with
``GATEWAY_CALLBACK_SECRET``. A receiver recomputes it over the raw body it received
and compares in constant time (README has the snippet).
"""

from __future__ import annotations

import hashlib
import hmac
import json

import requests

SIGNATURE_HEADER = "X-Gateway-Signature"


class CallbackFailed(Exception):
    """The receiver could not be reached or did not answer 2xx; the delivery is retried."""


def callback_body(*, task_id: str, status: str, result: object, error: str | None) -> bytes:
    """Return the exact bytes POSTed (and signed) for a task outcome."""
    payload = {"task_id": task_id, "status": status, "result": result, "error": error}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def sign(body: bytes, secret: str) -> str:
    """Return the ``X-Gateway-Signature`` value for ``body``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature: str, secret: str) -> bool:
    """Return True when ``signature`` is the valid header value for ``body`` (constant time)."""
    return hmac.compare_digest(sign(body, secret), signature)


def callback_send(url: str, body: bytes, *, task_id: str, secret: str | None, timeout_s: float) -> int:
    """POST ``body`` to ``url``; return the status, raise CallbackFailed unless 2xx.

    Redirects are not followed (a redirect could point the signed outcome elsewhere).
    Without a secret the callback is sent unsigned.
    """
    headers = {"Content-Type": "application/json", "X-Gateway-Task-ID": task_id, "User-Agent": "api-gateway-callback"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    try:
        response = requests.post(url, data=body, headers=headers, timeout=timeout_s, allow_redirects=False)
    except requests.RequestException as exc:
        raise CallbackFailed(exc.__class__.__name__) from exc
    if not 200 <= response.status_code < 300:
        raise CallbackFailed(f"receiver answered {response.status_code}")
    return response.status_code
