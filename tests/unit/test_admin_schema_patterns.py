"""The admin schema's patterns state the server's rules (issue: schema looser than validation)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from admin_panel.api.schema import ITEM_PATTERNS, STRING_PATTERNS
from gateway_core.patterns import validate_endpoint_pattern
from gateway_core.validators import validate_origin, validate_upstream_url, validate_version_name


def accepted(validator: Callable[[str], None], value: str) -> bool:
    try:
        validator(value)
    except ValidationError:
        return False
    return True


def matches(pattern: str, value: str) -> bool:
    return re.search(pattern, value) is not None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("default_url", "http://"),  # no host
        ("url", "http://user:secret@upstream.test"),  # credentials
        ("url", "https://upstream.test/a?q=1"),  # query
        ("url", "http://upstream.test:99999"),  # port out of range
        ("url", "http://upstream.test/a/../b"),
        ("url", "queue://nope"),
        ("endpoint_path", "////"),
        ("endpoint_path", "/api/v1/x/"),
        ("endpoint_path", "/api/v1/*/x"),
        ("route_prefix", "/api/v1/tasks"),
        ("version", "default"),
    ],
)
def test_values_the_server_refuses_are_invalid_by_the_schema(name: str, value: str) -> None:
    assert not matches(STRING_PATTERNS[name], value)


def test_origins_the_server_refuses_are_invalid_by_the_schema() -> None:
    for origin in ("http://", "https://app.test/path", "https://user@app.test", "ftp://app.test"):
        assert not matches(ITEM_PATTERNS["allowed_origins"], origin), origin
        assert not accepted(validate_origin, origin), origin


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("default_url", "http://127.0.0.1:7000"),
        ("url", "https://orders.internal/api"),
        ("url", "HTTP://[::1]:8080/v2/"),
        ("url", "queue://email"),
        ("endpoint_path", "/api/v1/pipelines/{id}"),
        ("endpoint_path", "/api/v1/*"),
        ("endpoint_path", "/"),
        ("route_prefix", "/api/v1/orders"),
        ("upstream_prefix", "/"),
        ("version", "v2.1-rc_1"),
    ],
)
def test_values_the_server_accepts_are_valid_by_the_schema(name: str, value: str) -> None:
    assert matches(STRING_PATTERNS[name], value)


URL_ALPHABET = st.sampled_from([*list("hts:/p@?#.[]1a-_%"), "http://", "https://", "queue://", "..", "email", ":80"])
PATH_ALPHABET = st.sampled_from([*list("/a.{}*_-%1"), "..", "{id}", "/*"])


@settings(max_examples=600, deadline=None)
@given(st.lists(URL_ALPHABET, max_size=8).map("".join))
def test_a_url_valid_by_the_schema_is_accepted_by_the_server(value: str) -> None:
    if matches(STRING_PATTERNS["url"], value):
        assert accepted(validate_upstream_url, value), value


@settings(max_examples=600, deadline=None)
@given(st.lists(PATH_ALPHABET, max_size=8).map("".join))
def test_an_endpoint_path_valid_by_the_schema_is_accepted_by_the_server(value: str) -> None:
    assert matches(STRING_PATTERNS["endpoint_path"], value) == accepted(validate_endpoint_pattern, value), value


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*list("vV1._-"), "default"]), min_size=1, max_size=6).map("".join))
def test_a_version_valid_by_the_schema_is_accepted_by_the_server(value: str) -> None:
    assert matches(STRING_PATTERNS["version"], value) == accepted(validate_version_name, value), value
