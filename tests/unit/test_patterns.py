"""Whitelist path patterns: validation, compilation and matching (gateway_core/patterns.py)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from gateway_core.patterns import compile_pattern, validate_endpoint_pattern


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/api/v1/pipelines", "/api/v1/pipelines", True),
        ("/api/v1/pipelines", "/api/v1/pipelines/", False),
        ("/api/v1/pipelines", "/api/v1/pipelines/1", False),
        ("/api/v1/pipelines/{id}", "/api/v1/pipelines/42", True),
        ("/api/v1/pipelines/{id}", "/api/v1/pipelines/", False),
        ("/api/v1/pipelines/{id}", "/api/v1/pipelines/42/runs", False),
        ("/api/v1/pipelines/{id}/runs", "/api/v1/pipelines/42/runs", True),
        ("/api/v1/pipelines/*", "/api/v1/pipelines", True),
        ("/api/v1/pipelines/*", "/api/v1/pipelines/", True),
        ("/api/v1/pipelines/*", "/api/v1/pipelines/42/runs/7", True),
        ("/api/v1/pipelines/*", "/api/v1/pipelinesX", False),
        ("/api/v1/pipelines/*", "/api/v1/other", False),
        ("/*", "/anything/at/all", True),
        ("/api/v1/a.b", "/api/v1/aXb", False),  # literal dots are not regex wildcards
        ("/api/v1/{name}", "/api/v1/caf\u00e9", True),  # decoded paths may hold any character
        ("/api/v1/x/{id}", "/api/v1/x/a\nb", True),
    ],
)
def test_pattern_matching(pattern: str, path: str, matches: bool) -> None:
    assert compile_pattern(pattern).matches(path) is matches


@pytest.mark.parametrize(
    "pattern",
    ["api/v1", "/api//v1", "/api/v1/", "/api/../v1", "/api/./v1", "/api/{bad-name}", "/api/x{id}", "/api/*/x", "/a b"],
)
def test_malformed_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValidationError):
        validate_endpoint_pattern(pattern)


def test_literal_segments_rank_specific_patterns_first() -> None:
    ranked = sorted(
        ["/api/v1/*", "/api/v1/orders/{id}", "/api/v1/orders/special"],
        key=lambda p: -compile_pattern(p).literal_segments,
    )
    assert ranked[0] == "/api/v1/orders/special"
