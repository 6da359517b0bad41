"""The upstream's answer as the client's response: its headers as the upstream sent them (routing.responses)."""

from __future__ import annotations

import pytest

from routing.http1 import Answer
from routing.responses import build_response
from routing.upstream import InvalidUpstreamAnswer


class StubLease:
    """Records what the response did with the upstream connection (pure logic: no socket)."""

    def __init__(self) -> None:
        self.released: bool | None = None
        self.closed = False

    def release(self, *, reusable: bool) -> None:
        self.released = reusable

    def close(self) -> None:
        self.closed = True


def answer(headers: list[tuple[str, str]], body: bytes = b"ok") -> Answer:
    received = Answer(None, 200, "OK", [*headers, ("Content-Length", str(len(body)))], body, keep_alive=True)  # type: ignore[arg-type]  # no socket: the body came with the head
    received.frame("GET")
    return received


def test_headers_keep_their_case_and_order_and_repeats_are_joined() -> None:
    lease = StubLease()
    response = build_response(
        answer([("Content-Type", "text/plain"), ("X-Thing", "a"), ("x-thing", "b"), ("Cache-Control", "no-store")]),
        lease,  # type: ignore[arg-type]  # the two methods build_response calls
        "GET",
    )
    assert response.content == b"ok"
    assert lease.released is True
    assert list(response.items()) == [
        ("Content-Type", "text/plain"),
        ("X-Thing", "a, b"),
        ("Cache-Control", "no-store"),
        ("Content-Length", "2"),
    ]
    assert response["x-thing"] == "a, b"


def test_no_content_type_from_the_upstream_means_none_to_the_client() -> None:
    response = build_response(answer([("X-Thing", "a")]), StubLease(), "GET")  # type: ignore[arg-type]
    assert "Content-Type" not in response
    assert list(response.items()) == [("X-Thing", "a"), ("Content-Length", "2")]


def test_a_rewritten_location_goes_through_djangos_checks() -> None:
    response = build_response(
        answer([("Location", "http://up/a"), ("location", "http://up/b")]),
        StubLease(),  # type: ignore[arg-type]
        "GET",
        rewrite_location=lambda value: value.replace("http://up", "https://gw"),
    )
    assert response["Location"] == "https://gw/a, https://gw/b"
    lease = StubLease()
    with pytest.raises(InvalidUpstreamAnswer):  # 502, and the connection is not given back for reuse
        build_response(
            answer([("Location", "http://up/a")]),
            lease,  # type: ignore[arg-type]
            "GET",
            rewrite_location=lambda value: value + "\r\nSet-Cookie: x=1",
        )
    assert lease.closed
