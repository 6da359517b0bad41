"""Typed gateway configuration, read once from ``settings.GATEWAY``."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

QUEUE_NAMES: tuple[str, ...] = ("email", "sms", "ai", "analytics", "execution")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Every ``GATEWAY_*`` knob, with its default (see README, Configuration)."""

    admin_api_on_public_port: bool = True
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_body_bytes: int = 10 * 1024 * 1024
    upstream_timeout_ms: int = 30_000
    connect_timeout_ms: int = 5_000
    upstream_ca_bundle: str = ""  # PEM file of CAs for https upstreams; empty: requests' bundle (certifi)
    breaker_failures: int = 5
    breaker_open_s: float = 30.0
    reload_poll_s: float = 0.5
    task_max_retries: int = 5
    task_ttl_hours: int = 72
    queue_handlers: Mapping[str, str] = field(default_factory=dict)
    callback_secret: str | None = None
    callback_allow_private: bool = False  # let callbacks reach loopback / private addresses
    service_keys: Mapping[str, str] = field(default_factory=dict)
    sms_provider_url: str = ""
    ai_service_url: str = ""
    execution_service: str = "pipeline"
    ratelimit_fail_open: bool = True
    ratelimit_db: str = ""  # without Redis: the SQLite file counting for every worker of the node
    metrics_dir: str = ""

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object]) -> GatewayConfig:
        """Build from ``settings.GATEWAY``; raise ImproperlyConfigured naming a bad variable."""
        values = {key.lower(): value for key, value in raw.items()}
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ImproperlyConfigured(f"Unknown GATEWAY settings: {', '.join(sorted(unknown))}")
        proxies = values.get("trusted_proxies", ())
        try:
            values["trusted_proxies"] = tuple(
                ipaddress.ip_network(str(cidr).strip(), strict=False) for cidr in proxies if str(cidr).strip()
            )
        except ValueError as exc:
            raise ImproperlyConfigured(f"GATEWAY_TRUSTED_PROXIES: {exc}") from None
        for name in ("max_body_bytes", "upstream_timeout_ms", "connect_timeout_ms", "breaker_failures"):
            if name in values and int(values[name]) < 1:  # type: ignore[call-overload]  # int-like from env
                raise ImproperlyConfigured(f"GATEWAY_{name.upper()} must be at least 1")
        unknown_queues = set(values.get("queue_handlers", {})) - set(QUEUE_NAMES)  # type: ignore[arg-type]  # a dict from env
        if unknown_queues:
            raise ImproperlyConfigured(f"GATEWAY_QUEUE_HANDLERS: unknown queues {sorted(unknown_queues)}")
        bundle = str(values.get("upstream_ca_bundle") or "")
        if bundle and not Path(bundle).is_file():
            raise ImproperlyConfigured(f"GATEWAY_UPSTREAM_CA_BUNDLE: no such file {bundle!r}")
        return cls(**values)  # type: ignore[arg-type]  # checked above


@cache
def gateway_config() -> GatewayConfig:
    """Return the process's GatewayConfig (built on first use; tests call ``cache_clear``)."""
    from django.conf import settings

    return GatewayConfig.from_mapping(settings.GATEWAY)
