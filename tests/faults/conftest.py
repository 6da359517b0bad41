"""Fixtures of the fault-injection suite: TCP relays in front of the real PostgreSQL, Redis and RabbitMQ."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.faults.relay import Relay


def through(url: str, relay: Relay) -> str:
    """Return ``url`` with its host and port replaced by the relay's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{relay.address}" if userinfo else relay.address
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def relay() -> Iterator[Callable[[str], Relay]]:
    """``relay(url)`` starts a relay to the server of ``url``; every relay is stopped at teardown."""
    started: list[Relay] = []

    def start(url: str) -> Relay:
        parts = urlsplit(url)
        made = Relay(parts.hostname or "127.0.0.1", parts.port or 0).start()
        started.append(made)
        return made

    yield start
    for made in started:
        made.stop()
