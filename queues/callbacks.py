"""Signed completion callbacks: POST the outcome to the client's X-Callback-URL (SPEC §5).

The body is compact JSON ``{"task_id", "status", "result", "error"}``; the header
``X-Gateway-Signature: sha256=<hex>`` is the HMAC-SHA256 of exactly those bytes with
``GATEWAY_CALLBACK_SECRET``. A receiver recomputes it over the raw body it received
and compares in constant time (README has the snippet).

A client's URL (``X-Callback-URL``) would otherwise let it make a worker POST anywhere:
the admin panel, a cloud metadata service, a database's HTTP port. Unless
``GATEWAY_CALLBACK_ALLOW_PRIVATE`` is set, a callback whose host resolves to any
address that is not globally routable (loopback, private, link-local, shared,
reserved, multicast) is refused and not retried. The check runs when the callback is
sent; a name whose DNS answer changes between the check and the connection can still
get through, which only an egress proxy closes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests

SIGNATURE_HEADER = "X-Gateway-Signature"


class CallbackFailed(Exception):
    """The receiver could not be reached or did not answer 2xx; the delivery is retried."""


class CallbackRefused(Exception):
    """The callback URL points at a non-public address; it is never sent."""


def refuse_internal_address(url: str) -> None:
    """Raise CallbackRefused when ``url``'s host resolves to an address that is not global.

    Raises CallbackFailed when the name does not resolve (retried: DNS may come back).
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:  # ValueError: a port out of range
        raise CallbackFailed(f"callback host does not resolve ({exc.__class__.__name__})") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # drop an IPv6 zone
        mapped = getattr(address, "ipv4_mapped", None)
        if not (mapped or address).is_global:
            raise CallbackRefused("the callback URL resolves to a non-public address")


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


def callback_send(
    url: str,
    body: bytes,
    *,
    task_id: str,
    secret: str | None,
    timeout_s: float,
    allow_private: bool = False,
    headers: Mapping[str, str] | None = None,
) -> int:
    """POST ``body`` to ``url``; return the status, raise CallbackFailed unless 2xx.

    Raises CallbackRefused, before any connection, for a non-public address unless
    ``allow_private``. Redirects are not followed (a redirect could point the signed
    outcome elsewhere). Without a secret the callback is sent unsigned. ``headers``
    are added (the trace context).
    """
    if not allow_private:
        refuse_internal_address(url)
    headers = {
        **(headers or {}),
        "Content-Type": "application/json",
        "X-Gateway-Task-ID": task_id,
        "User-Agent": "api-gateway-callback",
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    try:
        response = requests.post(url, data=body, headers=headers, timeout=timeout_s, allow_redirects=False)
    except requests.RequestException as exc:
        raise CallbackFailed(exc.__class__.__name__) from exc
    if not 200 <= response.status_code < 300:
        raise CallbackFailed(f"receiver answered {response.status_code}")
    return response.status_code
