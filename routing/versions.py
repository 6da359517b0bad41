"""Which version serves a request: a client pin or a weighted choice (SPEC §4.4)."""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence, Set

from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError
from gateway_core.snapshot import DEFAULT_VERSION, CompiledRoute, CompiledVersion

# Not cryptographic: traffic splitting only. Tests replace it with a seeded Random.
rng = random.Random()  # noqa: S311 - weighted traffic split, not a secret


def check_pinned_version(ctx: RequestContext) -> None:
    """Honour ``X-Service-Version``: the version must exist and be active, else 404.

    ``default`` pins the service's ``default_url`` (the name the response header uses).
    """
    pinned = ctx.request.META.get("HTTP_X_SERVICE_VERSION")
    if not pinned or not (pinned := pinned.strip()):
        return
    route = ctx.route
    assert route is not None  # noqa: S101 - resolve_route runs first
    target = route.target(pinned)
    if target is None:
        raise GatewayError(404, ErrorCode.VERSION_NOT_FOUND, "This service has no active version with that name.")
    ctx.pinned_version = pinned
    ctx.version = target


def choose_version(ctx: RequestContext) -> None:
    """Set ``ctx.version`` for an unpinned request, among the versions the caller may use.

    The caller's limits are the matched entry's versions and the caller's application's
    ``allowed_versions`` (``RequestContext.caller_application``), the same rules
    ``authorize_version`` applies afterwards.
    """
    if ctx.version is not None:
        return
    route = ctx.route
    assert route is not None  # noqa: S101 - resolve_route runs first
    application = ctx.caller_application()
    app_versions = application.allowed_versions if application is not None else frozenset()
    entry_versions = ctx.entry.versions if ctx.entry is not None else frozenset()
    ctx.version = pick_version(route, (app_versions, entry_versions), rng)


def pick_version(route: CompiledRoute, limits: Sequence[Set[str]], chooser: random.Random) -> CompiledVersion:
    """Pick by weight among active versions with weight > 0 allowed by every non-empty limit.

    None of those: the ``current_version`` when active and allowed, else ``default_url``
    when allowed, else any other active allowed version (by name), so a caller is never
    refused while a version it may use is active. Nothing allowed at all: the
    ``current_version`` or ``default_url`` (``authorize_version`` then refuses it).
    """
    restrictions = [limit for limit in limits if limit]
    if restrictions:
        candidates = tuple(v for v in route.weighted_versions if all(v.version in r for r in restrictions))
        cumulative: tuple[int, ...] = ()
        total = 0
        for version in candidates:
            total += version.weight
            cumulative += (total,)
    else:
        candidates, cumulative = route.weighted_versions, route.cumulative_weights
    if candidates:
        if len(candidates) == 1:
            return candidates[0]
        point = chooser.random() * cumulative[-1]
        return candidates[min(bisect_right(cumulative, point), len(candidates) - 1)]
    current = route.versions.get(route.current_version) if route.current_version else None
    if not restrictions:
        return current or route.default

    def allowed(version: CompiledVersion) -> bool:
        return all((version.version or DEFAULT_VERSION) in r for r in restrictions)

    for version in (current, route.default, *(route.versions[name] for name in sorted(route.versions))):
        if version is not None and allowed(version):
            return version
    return current or route.default


def served_version_name(version: CompiledVersion) -> str:
    """Return the X-Service-Version value naming ``version`` (``default`` for default_url)."""
    return version.version or DEFAULT_VERSION
