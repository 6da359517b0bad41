"""The SPEC §4.5 decisions and their order, on hand-built snapshot records (access/policy.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from django.test import RequestFactory

from access import keys, policy, usage
from access.keys import KeyVerifier
from gateway_core.context import RequestContext
from gateway_core.errors import GatewayError
from gateway_core.patterns import compile_pattern
from gateway_core.snapshot import (
    CompiledApplication,
    CompiledEntry,
    CompiledKey,
    CompiledRoute,
    CompiledVersion,
    Snapshot,
)

_fast_hasher = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TEST_SECRET = "s3cret"


def entry(
    app_id: str,
    path: str,
    *,
    methods: Sequence[str] = (),
    versions: Sequence[str] = (),
    rate_limit: int | None = None,
    is_public: bool = False,
) -> CompiledEntry:
    return CompiledEntry(
        id=f"{app_id}:{path}:{','.join(methods)}:{','.join(versions)}",
        application_id=app_id,
        pattern=compile_pattern(path),
        methods=frozenset(methods),
        versions=frozenset(versions),
        rate_limit=rate_limit,
        is_public=is_public,
    )


def application(
    app_id: str,
    entries: Sequence[CompiledEntry] = (),
    *,
    services: Sequence[str] = (),
    versions: Sequence[str] = (),
    origins: Sequence[str] = (),
) -> CompiledApplication:
    return CompiledApplication(
        id=app_id,
        name=f"{app_id}-name",
        allowed_services=frozenset(services),
        allowed_versions=frozenset(versions),
        allowed_origins=frozenset(origins),
        entries=tuple(sorted(entries, key=lambda e: -e.pattern.literal_segments)),
    )


def key(prefix: str, app_id: str, secret: str = TEST_SECRET, **fields: object) -> CompiledKey:
    record = CompiledKey(
        id=f"key-{prefix}",
        prefix=prefix,
        hash=_fast_hasher.hash(secret),
        application_id=app_id,
        expires_at=None,
        is_active=True,
    )
    return replace(record, **fields)  # type: ignore[arg-type]  # CompiledKey fields


def route(name: str = "orders") -> CompiledRoute:
    default = CompiledVersion(version="default", url="http://127.0.0.1:9", weight=0, queue=None)
    return CompiledRoute(
        service_id=f"svc-{name}",
        service_name=name,
        route_prefix=f"/api/v1/{name}",
        upstream_prefix=f"/api/v1/{name}",
        default=default,
        current_version=None,
        fallback_url=None,
        timeout_ms=None,
        versions={},
        service_key=None,
    )


def snapshot(apps: Sequence[CompiledApplication], key_records: Sequence[CompiledKey] = ()) -> Snapshot:
    return Snapshot(
        version=1,
        loaded_at=NOW,
        routes=(),
        routes_by_prefix={},
        applications={a.id: a for a in apps},
        keys={k.prefix: k for k in key_records},
        public_entries=tuple(e for a in apps for e in a.entries if e.is_public),
    )


def context(
    snap: Snapshot,
    path: str = "/api/v1/orders/1",
    *,
    method: str = "GET",
    api_key: str | None = None,
    service: str = "orders",
    pinned: str | None = None,
    headers: dict[str, str] | None = None,
) -> RequestContext:
    meta = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()}
    if api_key is not None:
        meta["HTTP_X_API_KEY"] = api_key
    request = RequestFactory().generic(method, path, **meta)
    ctx = RequestContext(request=request, snapshot=snap, started_at=0.0)
    ctx.path = path
    ctx.client_ip = "10.1.2.3"
    ctx.route = route(service)
    ctx.pinned_version = pinned
    return ctx


def version(name: str) -> CompiledVersion:
    return CompiledVersion(version=name, url="http://127.0.0.1:9", weight=100, queue=None)


def run_access(ctx: RequestContext, resolved: str | None = None) -> None:
    """Run the access steps in pipeline order, with ``resolved`` as the chosen version."""
    policy.identify_caller(ctx)
    policy.authorize_endpoint(ctx)
    ctx.version = version(resolved or ctx.pinned_version or "default")
    policy.authorize_version(ctx)


def refusal(ctx: RequestContext, resolved: str | None = None) -> tuple[int, str]:
    with pytest.raises(GatewayError) as caught:
        run_access(ctx, resolved)
    return caught.value.status, str(caught.value.code)


@pytest.fixture(autouse=True)
def fresh_verifier(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A verifier with a fixed clock and inline verification; usage notes go nowhere."""
    verifier = KeyVerifier("policy-tests", offload=lambda fn, stored, secret: fn(stored, secret), now=lambda: NOW)
    monkeypatch.setattr(policy, "key_verifier", lambda: verifier)
    noted: list[str] = []
    monkeypatch.setattr(usage, "key_used", noted.append)
    yield


@pytest.fixture
def world() -> Snapshot:
    mine = application(
        "app-mine",
        [
            entry("app-mine", "/api/v1/orders/{id}", methods=["GET"]),
            entry("app-mine", "/api/v1/orders/*", methods=["POST"], versions=["v2"]),
            entry("app-mine", "/api/v1/reports", rate_limit=10),
        ],
        services=["orders", "reports"],
        versions=["v1", "v2", "default"],
    )
    other = application("app-other", [entry("app-other", "/api/v1/billing/*")])
    public = application("app-public", [entry("app-public", "/api/v1/catalog/*", methods=["GET"], is_public=True)])
    inactive_app_key = key("gk_gone", "app-inactive")  # its application is not compiled (inactive)
    return snapshot(
        [mine, other, public],
        [
            key("gk_mine", "app-mine"),
            key("gk_other", "app-other"),
            key("gk_revoked", "app-mine", is_active=False),
            key("gk_expired", "app-mine", expires_at=NOW - timedelta(seconds=1)),
            key("gk_later", "app-mine", expires_at=NOW + timedelta(days=1)),
            inactive_app_key,
        ],
    )


def test_own_key_on_own_entry_is_allowed(world: Snapshot) -> None:
    ctx = context(world, api_key="gk_mine.s3cret")
    run_access(ctx, "v1")
    assert ctx.api_key is not None and ctx.api_key.prefix == "gk_mine"
    assert ctx.application is not None and ctx.application.id == "app-mine"
    assert ctx.entry is not None and ctx.entry.pattern.source == "/api/v1/orders/{id}"
    assert ctx.entry_owner is ctx.application


def test_key_not_yet_expired_is_allowed(world: Snapshot) -> None:
    run_access(context(world, api_key="gk_later.s3cret"), "v1")


@pytest.mark.parametrize(
    ("presented", "expected"),
    [
        ("gk_mine.wrong", (401, "invalid_api_key")),
        ("gk_unknown.s3cret", (401, "invalid_api_key")),
        ("no-dot-at-all", (401, "invalid_api_key")),
        ("", (401, "invalid_api_key")),
        ("gk_revoked.s3cret", (401, "invalid_api_key")),
        ("gk_gone.s3cret", (401, "invalid_api_key")),
        ("gk_expired.s3cret", (401, "expired_api_key")),
    ],
    ids=["wrong-secret", "unknown-prefix", "malformed", "empty", "revoked", "inactive-app", "expired"],
)
def test_bad_keys_get_401(world: Snapshot, presented: str, expected: tuple[int, str]) -> None:
    assert refusal(context(world, api_key=presented)) == expected


def test_no_key_on_private_endpoint_is_401_missing(world: Snapshot) -> None:
    assert refusal(context(world)) == (401, "missing_api_key")


def test_bad_key_is_refused_even_where_a_public_entry_matches(world: Snapshot) -> None:
    assert refusal(context(world, "/api/v1/catalog/1", api_key="gk_mine.wrong", service="catalog")) == (
        401,
        "invalid_api_key",
    )


def test_service_outside_allowed_services_is_403(world: Snapshot) -> None:
    ctx = context(world, "/api/v1/billing/1", api_key="gk_mine.s3cret", service="billing")
    assert refusal(ctx) == (403, "service_not_allowed")


def test_other_applications_key_is_403_endpoint(world: Snapshot) -> None:
    # app-other may call every service but has no entry for orders.
    assert refusal(context(world, api_key="gk_other.s3cret")) == (403, "endpoint_not_allowed")


def test_method_outside_the_entry_is_403_endpoint(world: Snapshot) -> None:
    assert refusal(context(world, method="DELETE", api_key="gk_mine.s3cret")) == (403, "endpoint_not_allowed")


def test_entry_version_list_is_enforced(world: Snapshot) -> None:
    ok = context(world, method="POST", api_key="gk_mine.s3cret")
    run_access(ok, "v2")
    assert refusal(context(world, method="POST", api_key="gk_mine.s3cret"), "v1") == (403, "version_not_allowed")


def test_application_version_list_is_enforced(world: Snapshot) -> None:
    assert refusal(context(world, api_key="gk_mine.s3cret"), "v3") == (403, "version_not_allowed")


def test_default_version_must_be_listed_when_a_list_is_set() -> None:
    app = application("a", [entry("a", "/api/v1/orders/*")], versions=["v1"])
    snap = snapshot([app], [key("gk_a", "a")])
    assert refusal(context(snap, api_key="gk_a.s3cret"), "default") == (403, "version_not_allowed")


def test_public_entry_needs_no_key_and_names_its_owner(world: Snapshot) -> None:
    ctx = context(world, "/api/v1/catalog/items/9", service="catalog")
    run_access(ctx)
    assert ctx.api_key is None and ctx.application is None
    assert ctx.entry is not None and ctx.entry.is_public
    assert ctx.entry_owner is not None and ctx.entry_owner.id == "app-public"


def test_valid_key_on_someone_elses_public_entry_identifies_the_caller(world: Snapshot) -> None:
    ctx = context(world, "/api/v1/catalog/items/9", api_key="gk_other.s3cret", service="catalog")
    run_access(ctx)
    assert ctx.application is not None and ctx.application.id == "app-other"
    assert ctx.entry_owner is not None and ctx.entry_owner.id == "app-public"


def test_public_entry_method_list_applies_to_anonymous_callers(world: Snapshot) -> None:
    ctx = context(world, "/api/v1/catalog/items/9", method="POST", service="catalog")
    assert refusal(ctx) == (401, "missing_api_key")


def test_pinned_version_prefers_the_entry_allowing_it() -> None:
    app = application(
        "a",
        [entry("a", "/api/v1/orders/*", versions=["v1"]), entry("a", "/api/v1/orders/{id}", versions=["v2"])],
    )
    snap = snapshot([app], [key("gk_a", "a")])
    ctx = context(snap, api_key="gk_a.s3cret", pinned="v1")
    run_access(ctx)
    assert ctx.entry is not None and ctx.entry.pattern.source == "/api/v1/orders/*"


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/api/v1/orders/{id}", "/api/v1/orders/42", True),
        ("/api/v1/orders/{id}", "/api/v1/orders/42/lines", False),
        ("/api/v1/orders/*", "/api/v1/orders", True),
        ("/api/v1/orders/*", "/api/v1/orders/42/lines", True),
        ("/api/v1/orders/*", "/api/v1/ordersx", False),
        ("/api/v1/orders", "/api/v1/orders/42", False),
    ],
)
def test_patterns_decide_access(pattern: str, path: str, matches: bool) -> None:
    snap = snapshot([application("a", [entry("a", pattern)])], [key("gk_a", "a")])
    ctx = context(snap, path, api_key="gk_a.s3cret")
    if matches:
        run_access(ctx)
    else:
        assert refusal(ctx) == (403, "endpoint_not_allowed")


def test_error_precedence_follows_the_spec(world: Snapshot) -> None:
    """A bad key wins over everything; a missing key over 403s; service over endpoint."""
    steps: list[Callable[[RequestContext], None]] = [policy.identify_caller, policy.authorize_endpoint]
    cases = [
        (context(world, "/api/v1/billing/1", api_key="gk_expired.s3cret", service="billing"), "expired_api_key"),
        (context(world, "/api/v1/billing/1", method="DELETE", service="billing"), "missing_api_key"),
        (context(world, "/api/v1/billing/1", api_key="gk_mine.s3cret", service="billing"), "service_not_allowed"),
    ]
    for ctx, code in cases:
        with pytest.raises(GatewayError) as caught:
            for step in steps:
                step(ctx)
        assert caught.value.code == code


def test_steady_state_runs_no_argon2(world: Snapshot) -> None:
    run_access(context(world, api_key="gk_mine.s3cret"), "v1")
    before = keys.verification_count()
    for _ in range(50):
        run_access(context(world, api_key="gk_mine.s3cret"), "v1")
    assert keys.verification_count() == before


def test_throttled_client_gets_retry_after(monkeypatch: pytest.MonkeyPatch, world: Snapshot) -> None:
    verifier = KeyVerifier("t", offload=lambda fn, s, p: fn(s, p), failure_budget=2, now=lambda: NOW)
    monkeypatch.setattr(policy, "key_verifier", lambda: verifier)
    for i in range(2):
        refusal(context(world, api_key=f"gk_mine.bad{i}"))
    with pytest.raises(GatewayError) as caught:
        policy.identify_caller(context(world, api_key="gk_mine.bad-again"))
    assert caught.value.code == "invalid_api_key"
    assert int(caught.value.headers["Retry-After"]) > 0


def test_keyed_caller_on_a_public_entry_follows_its_own_version_list() -> None:
    owner = application("owner", [entry("owner", "/api/v1/orders/*", is_public=True)], versions=["v1"])
    caller = application("caller", versions=["v2"])
    snap = snapshot([owner, caller], [key("gk_c", "caller")])
    run_access(context(snap, api_key="gk_c.s3cret"), "v2")
    assert refusal(context(snap, api_key="gk_c.s3cret"), "v1") == (403, "version_not_allowed")
    run_access(context(snap), "v1")  # anonymous: the owner's list
    assert refusal(context(snap), "v2") == (403, "version_not_allowed")


@pytest.mark.parametrize(
    ("presented", "logged"),
    [
        ("gk_0123456789ab.wrong", "gk_0123456789ab"),  # a well-formed prefix: named in the access line
        ("secret-without-a-prefix.x", ""),  # not shaped like a prefix: it could be a secret, never logged
        ("no-dot-at-all", ""),
    ],
)
def test_a_refused_key_is_named_by_its_prefix_only(world: Snapshot, presented: str, logged: str) -> None:
    ctx = context(world, api_key=presented)
    assert refusal(ctx)[0] == 401
    assert ctx.key_prefix == logged
