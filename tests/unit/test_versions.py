"""Version choice: pins, weights, restrictions, current_version and default_url (SPEC §4.4)."""

from __future__ import annotations

import random
from collections import Counter
from itertools import accumulate
from types import MappingProxyType

import pytest

from gateway_core.snapshot import CompiledRoute, CompiledVersion
from routing.compiler import compiled_version
from routing.versions import pick_version


def route(versions: list[tuple[str, int]], current: str | None = None) -> CompiledRoute:
    compiled = {name: compiled_version(name, f"http://{name}:80", weight) for name, weight in versions}
    weighted = tuple(v for _, v in sorted(compiled.items()) if v.weight > 0)
    return CompiledRoute(
        service_id="s",
        service_name="svc",
        route_prefix="/api/v1/svc",
        upstream_prefix="/api/v1/svc",
        default=compiled_version("default", "http://default:80", 0),
        current_version=current,
        fallback_url=None,
        timeout_ms=None,
        versions=MappingProxyType(compiled),
        service_key=None,
        weighted_versions=weighted,
        cumulative_weights=tuple(accumulate(v.weight for v in weighted)),
    )


def names(chosen: list[CompiledVersion]) -> Counter[str]:
    return Counter(v.version for v in chosen)


def test_weighted_choice_follows_the_weights() -> None:
    rng = random.Random(1234)
    r = route([("v1", 750), ("v2", 250)])
    counts = names([pick_version(r, (), rng) for _ in range(20_000)])
    assert counts["v1"] / 20_000 == pytest.approx(0.75, abs=0.015)
    assert counts["v2"] / 20_000 == pytest.approx(0.25, abs=0.015)


def test_weight_zero_is_never_chosen_unpinned() -> None:
    rng = random.Random(7)
    r = route([("v1", 1), ("v2", 0)])
    assert names([pick_version(r, (), rng) for _ in range(2_000)]) == Counter({"v1": 2_000})


def test_choice_is_restricted_to_versions_the_caller_may_use() -> None:
    rng = random.Random(3)
    r = route([("v1", 900), ("v2", 50), ("v3", 50)])
    chosen = names([pick_version(r, (frozenset({"v2", "v3"}), frozenset()), rng) for _ in range(4_000)])
    assert set(chosen) == {"v2", "v3"}
    assert chosen["v2"] / 4_000 == pytest.approx(0.5, abs=0.04)
    both = names([pick_version(r, (frozenset({"v2", "v3"}), frozenset({"v3", "v1"})), rng) for _ in range(100)])
    assert both == Counter({"v3": 100})


def test_current_version_when_no_weighted_version_applies() -> None:
    rng = random.Random(0)
    assert pick_version(route([("v1", 0), ("v2", 0)], current="v2"), (), rng).version == "v2"


def test_default_url_when_nothing_else_applies() -> None:
    rng = random.Random(0)
    assert pick_version(route([]), (), rng).version == "default"
    assert pick_version(route([("v1", 0)], current="gone"), (), rng).url == "http://default:80"
    # Allowed set excludes every weighted version and current_version is not active: default_url.
    assert pick_version(route([("v1", 10)], current=None), (frozenset({"v9"}),), rng).version == "default"


def test_route_target_resolves_pins_including_default() -> None:
    r = route([("v1", 0)])
    assert r.target("v1") is not None
    assert r.target("default") is r.default
    assert r.target("v9") is None


@pytest.mark.parametrize(
    ("allowed", "current", "expected"),
    [
        ({"v2"}, "v2", "v2"),  # current_version, allowed
        ({"default"}, "v2", "default"),  # current not allowed: default_url, allowed
        ({"v3"}, "v2", "v3"),  # neither: another active allowed version (weight 0, by name)
        ({"v1", "v3"}, "v2", "v1"),  # several allowed: the first by name
    ],
)
def test_an_unpinned_call_gets_an_allowed_version_while_one_is_active(
    allowed: set[str], current: str, expected: str
) -> None:
    """SPEC §4.4: never refused version_not_allowed while some version the caller may use is active."""
    r = route([("v1", 0), ("v2", 0), ("v3", 0)], current=current)
    assert pick_version(r, (frozenset(allowed),), random.Random(0)).version == expected
