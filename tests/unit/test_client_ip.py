"""Client IP resolution: socket peer unless a trusted proxy forwarded the request."""

import ipaddress

from gateway_core.client_ip import client_ip_for

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


def test_without_trusted_proxies_x_forwarded_for_is_ignored() -> None:
    assert client_ip_for("10.1.2.3", "1.2.3.4", ()) == "10.1.2.3"


def test_untrusted_peer_cannot_spoof_its_address() -> None:
    assert client_ip_for("203.0.113.9", "1.2.3.4", TRUSTED) == "203.0.113.9"


def test_trusted_peer_gives_the_last_untrusted_hop() -> None:
    assert client_ip_for("10.0.0.5", "198.51.100.1, 1.2.3.4, 10.0.0.7", TRUSTED) == "1.2.3.4"


def test_chain_of_trusted_hops_ends_at_the_leftmost() -> None:
    assert client_ip_for("10.0.0.5", "10.9.9.9, 10.0.0.7", TRUSTED) == "10.9.9.9"


def test_malformed_hop_stops_the_walk() -> None:
    assert client_ip_for("10.0.0.5", "1.2.3.4, not-an-ip", TRUSTED) == "10.0.0.5"


def test_ipv6_peer() -> None:
    assert client_ip_for("::1", "2001:db8::1", TRUSTED) == "2001:db8::1"
