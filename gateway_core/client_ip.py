"""The client's IP: the socket peer, or X-Forwarded-For from a trusted proxy (SPEC §4.6)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from gateway_core.conf import IPNetwork


def client_ip_for(peer: str, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> str:
    """Return the client IP for a request from ``peer``.

    ``X-Forwarded-For`` is walked from the right (the hop nearest us) while each hop is
    a trusted proxy; the first untrusted address is the client. With no trusted
    proxies configured the header is ignored entirely, so clients cannot spoof it.
    """
    if not trusted or not forwarded_for or not is_trusted_proxy(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        if _parsed(hop) is None:
            break  # a malformed hop: stop believing anything further left
        client = hop
        if not is_trusted_proxy(hop, trusted):
            break
    return client


def is_trusted_proxy(address: str, trusted: Sequence[IPNetwork]) -> bool:
    """Return True when ``address`` lies in one of the ``trusted`` networks."""
    if not trusted:
        return False
    ip = _parsed(address)
    return ip is not None and any(ip in network for network in trusted)


@lru_cache(maxsize=4096)
def _parsed(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return ``address`` parsed, or None; remembered, as a gateway sees the same peers again and again."""
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None
