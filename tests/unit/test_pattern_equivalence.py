"""Literal whitelist patterns are matched without a regex: they match exactly what the regex form does."""

from __future__ import annotations

import random
import re

import pytest
from django.core.exceptions import ValidationError

from gateway_core.patterns import _PARAM_RE, compile_pattern


def regex_form(source: str) -> re.Pattern[str]:
    """The regular expression every pattern used to compile to (SPEC §3's three forms)."""
    body, subtree = source[1:], False
    if body.endswith("/*"):
        body, subtree = body[:-2], True
    elif body == "*":
        body, subtree = "", True
    parts = ["[^/]+" if _PARAM_RE.match(s) else re.escape(s) for s in (body.split("/") if body else [])]
    expression = "/" + "/".join(parts)
    if subtree:
        expression = (expression.rstrip("/") + "(?:/.*)?") if parts else "/.*"
    return re.compile(expression + r"\Z", re.DOTALL)


@pytest.mark.parametrize("seed", [1, 2])
def test_every_pattern_matches_what_its_regex_form_matches(seed: int) -> None:
    rng = random.Random(seed)
    segments = ["a", "b", "api", "v1", "x.y", "{id}"]
    literal = checked = 0
    for _ in range(1500):
        chosen = [rng.choice(segments) for _ in range(rng.randint(0, 4))]
        source = "/" + "/".join(chosen) + (("/*" if chosen else "*") if rng.random() < 0.5 else "")
        try:
            pattern = compile_pattern(source)
        except ValidationError:
            continue
        literal += pattern.regex is None
        expected = regex_form(source)
        for _ in range(20):
            path = "/" + "/".join(
                rng.choice(["a", "b", "api", "v1", "x.y", "zz", ""]) for _ in range(rng.randint(0, 5))
            )
            path += "/" if rng.random() < 0.2 else ""
            assert pattern.matches(path) == (expected.match(path) is not None), (source, path)
            checked += 1
    assert literal > 300 and checked > 20_000  # both kinds, many paths
