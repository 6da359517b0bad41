"""GatewayConfig: typed knobs with defaults; a bad value names its variable."""

import ipaddress

import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway_core.conf import GatewayConfig


def test_defaults_match_the_spec() -> None:
    config = GatewayConfig.from_mapping({})
    assert config.max_body_bytes == 10 * 1024 * 1024
    assert config.upstream_timeout_ms == 30_000
    assert config.breaker_failures == 5
    assert config.breaker_open_s == 30.0
    assert config.task_max_retries == 5
    assert config.trusted_proxies == ()
    assert config.admin_api_on_public_port is True


def test_trusted_proxies_parse_as_networks() -> None:
    config = GatewayConfig.from_mapping({"TRUSTED_PROXIES": ["10.0.0.0/8", " 192.168.1.1 "]})
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.1/32"),
    )


def test_bad_trusted_proxy_names_the_variable() -> None:
    with pytest.raises(ImproperlyConfigured, match="GATEWAY_TRUSTED_PROXIES"):
        GatewayConfig.from_mapping({"TRUSTED_PROXIES": ["10.0.0.0/33"]})


def test_non_positive_size_names_the_variable() -> None:
    with pytest.raises(ImproperlyConfigured, match="GATEWAY_MAX_BODY_BYTES"):
        GatewayConfig.from_mapping({"MAX_BODY_BYTES": 0})


def test_handler_for_unknown_queue_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="GATEWAY_QUEUE_HANDLERS"):
        GatewayConfig.from_mapping({"QUEUE_HANDLERS": {"fax": "x.y"}})


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="Unknown GATEWAY settings"):
        GatewayConfig.from_mapping({"NOPE": 1})


def test_a_missing_upstream_ca_bundle_names_the_variable(tmp_path) -> None:
    with pytest.raises(ImproperlyConfigured, match="GATEWAY_UPSTREAM_CA_BUNDLE"):
        GatewayConfig.from_mapping({"UPSTREAM_CA_BUNDLE": str(tmp_path / "missing.pem")})
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert GatewayConfig.from_mapping({"UPSTREAM_CA_BUNDLE": str(bundle)}).upstream_ca_bundle == str(bundle)
