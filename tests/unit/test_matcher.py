"""Path safety (SPEC §4.2) and longest-prefix matching on segment boundaries (SPEC §4.3)."""

from __future__ import annotations

import pytest

from routing.matcher import decode_path, find_route, is_unsafe, raw_rest, raw_target


@pytest.mark.parametrize(
    "raw",
    [
        "/api/v1/svc/../admin",
        "/api/v1/svc/./x",
        "/api/v1/svc/..",
        "/api/v1/svc/%2e%2e/admin",
        "/api/v1/svc/%2E%2e/admin",
        "/api/v1/svc/.%2E/admin",
        "/api/v1/svc/%2e/x",
        "/api/v1/svc/a%2F..%2Fb",
        "/api/v1/svc/a%2f%2e%2e%2fb",
        "/api/v1/svc/a%00b",
        "/api/v1/svc/a%5Cb",
        "/api/v1/svc/a\\b",
    ],
)
def test_dot_segments_nul_and_backslash_are_unsafe_in_any_encoding(raw: str) -> None:
    assert is_unsafe(decode_path(raw))


@pytest.mark.parametrize(
    "raw",
    ["/api/v1/svc/a.b", "/api/v1/svc/...", "/api/v1/svc/.hidden", "/api/v1/svc/a..b/", "/api/v1/svc/%252e%252e"],
)
def test_dots_inside_a_segment_and_double_encoding_are_safe(raw: str) -> None:
    assert not is_unsafe(decode_path(raw))


ROUTES = {p: p for p in ("/api/v1", "/api/v1/users", "/api/v1/users/admin", "/api/v1/pay")}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/users", "/api/v1/users"),
        ("/api/v1/users/", "/api/v1/users"),
        ("/api/v1/users/42", "/api/v1/users"),
        ("/api/v1/users/admin/x", "/api/v1/users/admin"),
        ("/api/v1/users/administrator", "/api/v1/users"),
        ("/api/v1/usersx", "/api/v1"),  # not a segment boundary: only the catch-all
        ("/api/v1/payments", "/api/v1"),
        ("/api/v1", "/api/v1"),
    ],
)
def test_longest_prefix_on_a_segment_boundary_wins(path: str, expected: str) -> None:
    assert find_route(ROUTES, path) == expected  # type: ignore[arg-type]  # strings stand in for routes


def test_no_route_without_a_matching_prefix() -> None:
    routes = {"/api/v1/users": "users"}
    assert find_route(routes, "/api/v1/usersx") is None  # type: ignore[arg-type]
    assert find_route(routes, "/api/v1") is None  # type: ignore[arg-type]
    assert find_route(routes, "/other/api/v1/users") is None  # type: ignore[arg-type]


def test_raw_target_keeps_path_and_query_byte_for_byte() -> None:
    meta = {"RAW_URI": "/api/v1/x/a%2fb?q=%7e&z=a+b%zz&&", "PATH_INFO": "/api/v1/x/a/b"}
    assert raw_target(meta) == ("/api/v1/x/a%2fb", "q=%7e&z=a+b%zz&&")


def test_raw_target_tells_an_empty_query_from_none() -> None:
    assert raw_target({"RAW_URI": "/api/v1/x?"}) == ("/api/v1/x", "")
    assert raw_target({"RAW_URI": "/api/v1/x"}) == ("/api/v1/x", None)


def test_raw_target_of_an_absolute_form_request_line() -> None:
    assert raw_target({"RAW_URI": "http://gw.example:4200/api/v1/x?a=1"}) == ("/api/v1/x", "a=1")


def test_raw_target_encodes_only_non_ascii_bytes() -> None:
    latin1_line = "/api/v1/x/caf\xe9?q=\xe9"  # gunicorn decodes the request line as latin-1
    assert raw_target({"RAW_URI": latin1_line}) == ("/api/v1/x/caf%E9", "q=%E9")


@pytest.mark.parametrize(
    ("raw", "prefix", "rest"),
    [
        ("/api/v1/svc/a/b", "/api/v1/svc", "/a/b"),
        ("/api/v1/svc", "/api/v1/svc", ""),
        ("/api/v1/%73vc/a%2Fb", "/api/v1/svc", "/a%2Fb"),
        ("/api/v1%2Fsvc/x", "/api/v1/svc", "/x"),
    ],
)
def test_the_rest_of_the_raw_path_follows_the_decoded_prefix(raw: str, prefix: str, rest: str) -> None:
    assert raw_rest(raw, len(prefix)) == rest
