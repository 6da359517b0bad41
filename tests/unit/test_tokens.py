"""Bearer-token verification on hand-built snapshots (access/tokens.py, jwks.py, introspection.py).

Keys are generated here; the JWKS and introspection endpoints are plain functions
the tests script (the live versions are in tests/integration/test_tokens_live.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import SimpleNamespace

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.core.exceptions import ValidationError
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from access.introspection import Introspector
from access.jwks import Fetched, FetchFailed, IssuerUnavailable, JwksCache, max_age_s
from access.models import TokenIssuer
from access.tokens import TokenRefused, TokenVerifier, authorize_scopes, bearer_token
from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError
from gateway_core.patterns import compile_pattern
from gateway_core.snapshot import CompiledApplication, CompiledEntry, CompiledIssuer, Snapshot

T0 = 1_900_000_000.0
ISS = "https://id.example.com"
APP_ID = "00000000-0000-4000-8000-000000000001"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_of(private: object, kid: str, algorithm: type = RSAAlgorithm) -> dict[str, object]:
    data = json.loads(algorithm.to_jwk(private.public_key()))  # type: ignore[attr-defined]  # key types
    data["kid"] = kid
    return data


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeJwks:
    """A scripted JWKS endpoint: serves ``keys`` with ``cache_control``, or fails when ``down``."""

    keys: list[dict[str, object]] = field(default_factory=list)
    cache_control: str | None = "max-age=600"
    down: bool = False
    calls: int = 0

    def __call__(self, url: str) -> Fetched:
        self.calls += 1
        if self.down:
            raise FetchFailed("ConnectionError")
        return Fetched(json.dumps({"keys": self.keys}).encode(), self.cache_control)


def issuer(**fields: object) -> CompiledIssuer:
    values: dict[str, object] = {
        "id": "iss-1",
        "issuer": ISS,
        "application_id": APP_ID,
        "kind": "jwks",
        "jwks_url": "https://id.example.com/jwks",
        "introspection_url": None,
        "audiences": frozenset({"orders"}),
        "algorithms": frozenset({"RS256", "PS256", "ES256", "EdDSA"}),
        "user_claim": "sub",
        "scope_claim": "scope",
        "leeway_s": 30,
    }
    values.update(fields)
    return CompiledIssuer(**values)  # type: ignore[arg-type]  # test values


def snapshot(*issuers: CompiledIssuer, introspection: tuple[CompiledIssuer, ...] = ()) -> Snapshot:
    app = CompiledApplication(APP_ID, "web", frozenset(), frozenset(), frozenset(), ())
    return Snapshot(
        version=1,
        loaded_at=datetime.fromtimestamp(T0, tz=UTC),
        routes=(),
        routes_by_prefix={},
        applications={APP_ID: app},
        keys={},
        public_entries=(),
        issuers={i.issuer: i for i in issuers},
        introspection_issuers=introspection,
    )


def claims(**extra: object) -> dict[str, object]:
    return {"iss": ISS, "sub": "alice", "aud": "orders", "exp": int(T0) + 3600, "iat": int(T0), "scope": "read"} | extra


def rs256(kid: str = "k1", key: object = RSA_KEY, **extra: object) -> str:
    return jwt.encode(claims(**extra), key, algorithm="RS256", headers={"kid": kid})  # type: ignore[arg-type]


@dataclass
class World:
    clock: Clock
    endpoint: FakeJwks
    verifier: TokenVerifier
    spawned: list[Callable[[], None]]

    def check(self, token: str, snap: Snapshot) -> object:
        # PyJWT reads the wall clock for exp/nbf/iat; freeze it at the test clock.
        return self.verifier.check(token, snap)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    clock = Clock()
    monkeypatch.setattr(jwt.api_jwt, "datetime", _FrozenDatetime(clock))
    endpoint = FakeJwks(keys=[jwk_of(RSA_KEY, "k1")])
    spawned: list[Callable[[], None]] = []
    cache = JwksCache(endpoint, clock=clock, spawn=spawned.append)
    verifier = TokenVerifier("test", jwks=cache, introspector=Introspector(_no_post), clock=clock)
    return World(clock, endpoint, verifier, spawned)


class _FrozenDatetime:
    """Stands in for ``datetime`` inside PyJWT so its exp/nbf/iat checks use the test clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def now(self, tz: object = None) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def __getattr__(self, name: str) -> object:
        return getattr(datetime, name)


def _no_post(url: str, form: Mapping[str, str], authorization: str | None) -> Mapping[str, object]:
    raise AssertionError("no introspection expected")


def refused(world: World, token: str, snap: Snapshot) -> ErrorCode:
    with pytest.raises(TokenRefused) as caught:
        world.verifier.check(token, snap)
    return caught.value.code


# --- JWT verification --------------------------------------------------------------------


def test_valid_rs256_token_names_user_and_scopes_and_is_verified_once(world: World) -> None:
    snap = snapshot(issuer())
    token = rs256(scope="read write")
    first = world.verifier.check(token, snap)
    again = world.verifier.check(token, snap)
    assert (first.user, first.scopes, first.issuer.application_id) == ("alice", frozenset({"read", "write"}), APP_ID)
    assert again is first
    assert world.verifier.verifications == 1
    assert world.endpoint.calls == 1


@pytest.mark.parametrize(
    ("private", "algorithm", "alg", "crv_issuer"),
    [
        (RSA_KEY, RSAAlgorithm, "PS256", None),
        (ec.generate_private_key(ec.SECP256R1()), ECAlgorithm, "ES256", None),
        (ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm, "EdDSA", None),
    ],
)
def test_ps_es_and_eddsa_tokens_verify(
    world: World, private: object, algorithm: type, alg: str, crv_issuer: object
) -> None:
    world.endpoint.keys = [jwk_of(private, "k-alg", algorithm)]
    token = jwt.encode(claims(), private, algorithm=alg, headers={"kid": "k-alg"})  # type: ignore[arg-type]
    assert world.verifier.check(token, snapshot(issuer())).user == "alice"


def test_hs256_secret_issuer_verifies_and_refuses_another_secret(world: World) -> None:
    hs = issuer(kind="secret", jwks_url=None, algorithms=frozenset({"HS256"}), secret=b"k" * 32)
    good = jwt.encode(claims(), b"k" * 32, algorithm="HS256")
    bad = jwt.encode(claims(), b"x" * 32, algorithm="HS256")
    assert world.verifier.check(good, snapshot(hs)).user == "alice"
    assert refused(world, bad, snapshot(hs)) is ErrorCode.INVALID_TOKEN


def test_secret_issuer_without_its_secret_in_the_environment_is_unavailable(world: World) -> None:
    hs = issuer(kind="secret", jwks_url=None, algorithms=frozenset({"HS256"}), secret=None)
    with pytest.raises(IssuerUnavailable):
        world.verifier.check(jwt.encode(claims(), b"k" * 32, algorithm="HS256"), snapshot(hs))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_algorithm_confusion_hs256_signed_with_the_rsa_public_key_is_refused(world: World) -> None:
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'kid': 'k1'}).encode())}.{_b64(json.dumps(claims()).encode())}"
    forged = f"{signing_input}.{_b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"
    # Even an issuer that (wrongly) lists HS256 finds no HS key in a JWKS.
    assert refused(world, forged, snapshot(issuer())) is ErrorCode.INVALID_TOKEN
    lax = issuer(algorithms=frozenset({"RS256", "HS256"}))
    assert refused(world, forged, snapshot(lax)) is ErrorCode.INVALID_TOKEN


def test_alg_none_is_refused(world: World) -> None:
    unsigned = jwt.encode(claims(), None, algorithm="none")  # type: ignore[arg-type]
    assert refused(world, unsigned, snapshot(issuer())) is ErrorCode.INVALID_TOKEN


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"aud": "billing"}, ErrorCode.INVALID_TOKEN),
        ({"exp": int(T0) - 31}, ErrorCode.EXPIRED_TOKEN),
        ({"nbf": int(T0) + 60}, ErrorCode.INVALID_TOKEN),
        ({"iat": int(T0) + 60}, ErrorCode.INVALID_TOKEN),
        ({"iss": "https://evil.example.com"}, ErrorCode.INVALID_TOKEN),
        ({"sub": None}, ErrorCode.INVALID_TOKEN),
    ],
    ids=["other-audience", "expired", "not-before", "issued-in-future", "unknown-issuer", "no-user"],
)
def test_claims_are_checked_with_leeway(world: World, extra: dict[str, object], code: ErrorCode) -> None:
    token = rs256(**extra) if extra.get("sub", "x") is not None else rs256_without("sub")
    assert refused(world, token, snapshot(issuer())) is code


def rs256_without(claim: str) -> str:
    payload = claims()
    del payload[claim]
    return jwt.encode(payload, RSA_KEY, algorithm="RS256", headers={"kid": "k1"})


def test_leeway_accepts_a_token_expired_within_it(world: World) -> None:
    assert world.verifier.check(rs256(exp=int(T0) - 10), snapshot(issuer())).user == "alice"


def test_a_remembered_token_expires_from_the_memo(world: World) -> None:
    snap = snapshot(issuer())
    token = rs256(exp=int(T0) + 60)
    world.verifier.check(token, snap)
    world.clock.now += 60 + 31
    assert refused(world, token, snap) is ErrorCode.EXPIRED_TOKEN


def test_malformed_and_foreign_tokens_are_invalid(world: World) -> None:
    assert refused(world, "not-a-jwt", snapshot(issuer())) is ErrorCode.INVALID_TOKEN
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused(world, rs256(key=other), snapshot(issuer())) is ErrorCode.INVALID_TOKEN


# --- JWKS cache and rotation ----------------------------------------------------------------


def test_unknown_kid_refetches_once_per_30_s(world: World) -> None:
    snap = snapshot(issuer())
    world.verifier.check(rs256(), snap)
    assert refused(world, rs256(kid="k2", key=RSA_KEY_2), snap) is ErrorCode.INVALID_TOKEN
    assert world.endpoint.calls == 2
    assert refused(world, rs256(kid="k3", key=RSA_KEY_2), snap) is ErrorCode.INVALID_TOKEN
    assert world.endpoint.calls == 2  # within 30 s: no refetch for an unknown kid


def test_rotation_new_kid_after_one_refetch_removed_key_after_refresh(world: World) -> None:
    snap = snapshot(issuer())
    old = rs256()
    world.verifier.check(old, snap)
    world.endpoint.keys = [jwk_of(RSA_KEY, "k1"), jwk_of(RSA_KEY_2, "k2")]
    assert world.verifier.check(rs256(kid="k2", key=RSA_KEY_2), snap).user == "alice"
    assert world.endpoint.calls == 2
    # The old key is withdrawn; the cache refreshes in the background once stale.
    world.endpoint.keys = [jwk_of(RSA_KEY_2, "k2")]
    assert world.verifier.check(old, snap).user == "alice"  # still cached: the memo answers
    world.clock.now += 601
    assert world.verifier.check(old, snap).user == "alice"  # stale keys serve while refreshing
    assert len(world.spawned) == 1
    world.spawned.pop()()
    assert refused(world, old, snap) is ErrorCode.INVALID_TOKEN


def test_jwks_down_keeps_cached_keys_and_new_issuer_is_unavailable(world: World) -> None:
    snap = snapshot(issuer(), issuer(id="iss-2", issuer="https://new.example.com"))
    world.verifier.check(rs256(), snap)
    world.endpoint.down = True
    world.clock.now += 601
    world.verifier.check(rs256(sub="bob"), snap)  # stale but cached keys verify a new token
    for run in world.spawned:
        run()
    world.verifier.check(rs256(sub="carol"), snap)
    with pytest.raises(IssuerUnavailable):
        world.verifier.check(rs256(iss="https://new.example.com"), snap)
    with pytest.raises(IssuerUnavailable):  # a kid no cached key covers, the endpoint down
        world.verifier.check(rs256(kid="k9", key=RSA_KEY_2), snap)


def test_issuer_change_purges_its_remembered_tokens(world: World) -> None:
    token = rs256()
    world.verifier.check(token, snapshot(issuer()))
    world.verifier.check(token, snapshot(issuer()))  # a new snapshot, the issuer unchanged: memo kept
    assert world.verifier.verifications == 1
    assert refused(world, token, snapshot(issuer(audiences=frozenset({"billing"})))) is ErrorCode.INVALID_TOKEN


def test_memo_is_bounded(world: World) -> None:
    verifier = TokenVerifier("test", jwks=world.verifier.jwks, introspector=Introspector(_no_post), memo_size=2)
    verifier.clock = world.clock
    snap = snapshot(issuer())
    for user in ("a", "b", "c"):
        verifier.check(rs256(sub=user), snap)
    assert verifier.remembered() == 2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, 300), ("max-age=120", 120), ("public, max-age=999999", 86400), ("no-store", 1), ("max-age=0", 1)],
)
def test_cache_control_is_honoured_up_to_24_h(header: str | None, seconds: int) -> None:
    assert max_age_s(header) == seconds


# --- Introspection --------------------------------------------------------------------------


@dataclass
class FakeIntrospection:
    answers: dict[str, dict[str, object]]
    down: bool = False
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    def __call__(self, url: str, form: Mapping[str, str], authorization: str | None) -> Mapping[str, object]:
        self.seen.append((form["token"], authorization))
        if self.down:
            raise FetchFailed("ConnectTimeout")
        return self.answers.get(form["token"], {"active": False})


def introspection_world(world: World, endpoint: FakeIntrospection) -> tuple[TokenVerifier, Snapshot]:
    opaque = issuer(
        id="iss-i",
        issuer="https://opaque.example.com",
        kind="introspection",
        jwks_url=None,
        introspection_url="https://opaque.example.com/introspect",
        algorithms=frozenset(),
        audiences=frozenset(),
        client_id="gateway",
        client_secret="s3cret",
    )
    verifier = TokenVerifier("test", jwks=world.verifier.jwks, introspector=Introspector(endpoint), clock=world.clock)
    return verifier, snapshot(introspection=(opaque,))


def test_introspection_positive_answer_is_cached_until_exp_or_60_s(world: World) -> None:
    endpoint = FakeIntrospection({"tok-a": {"active": True, "sub": "alice", "scope": "read", "exp": T0 + 30}})
    verifier, snap = introspection_world(world, endpoint)
    identity = verifier.check("tok-a", snap)
    verifier.check("tok-a", snap)
    assert (identity.user, identity.scopes, len(endpoint.seen)) == ("alice", frozenset({"read"}), 1)
    assert endpoint.seen[0][1] == "Basic " + base64.b64encode(b"gateway:s3cret").decode()
    world.clock.now += 31  # past exp (sooner than 60 s): asked again, and now expired
    with pytest.raises(TokenRefused):
        verifier.check("tok-a", snap)
    assert len(endpoint.seen) == 2


def test_introspection_negative_answer_is_cached_5_s_at_most(world: World) -> None:
    endpoint = FakeIntrospection({})
    verifier, snap = introspection_world(world, endpoint)
    for _ in range(3):
        with pytest.raises(TokenRefused):
            verifier.check("tok-x", snap)
    assert len(endpoint.seen) == 1
    world.clock.now += 5
    endpoint.answers["tok-x"] = {"active": True, "sub": "bob"}
    assert verifier.check("tok-x", snap).user == "bob"


def test_introspection_unreachable_is_unavailable(world: World) -> None:
    verifier, snap = introspection_world(world, FakeIntrospection({}, down=True))
    with pytest.raises(IssuerUnavailable):
        verifier.check("tok-a", snap)


# --- Parsing and scopes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("Basic dXNlcjpwdw==", None), ("Bearer abc.def-_~+/=", "abc.def-_~+/="), ("bearer  t0k", "t0k")],
)
def test_bearer_header_parsing(header: str | None, expected: str | None) -> None:
    meta = {} if header is None else {"HTTP_AUTHORIZATION": header}
    assert bearer_token(meta) == expected


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer a b", "Bearer tok\u00e9n", "Bearer " + "a" * 9000, "Bearer ab=cd", "Bearer ===", "Bearer a,b"],
)
def test_malformed_bearer_header_is_refused(header: str) -> None:
    with pytest.raises(TokenRefused):
        bearer_token({"HTTP_AUTHORIZATION": header})


def test_scp_list_claim_is_accepted(world: World) -> None:
    token = jwt.encode(
        {k: v for k, v in claims(scp=["read", "admin"]).items() if k != "scope"},
        RSA_KEY,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    assert world.verifier.check(token, snapshot(issuer())).scopes == frozenset({"read", "admin"})


def _ctx(required: frozenset[str], user: str | None, scopes: frozenset[str]) -> RequestContext:
    # authorize_scopes reads only these three fields of the request context.
    entry = CompiledEntry(
        "e1", APP_ID, compile_pattern("/api/v1/x"), frozenset(), frozenset(), None, False, required_scopes=required
    )
    return SimpleNamespace(entry=entry, user=user, scopes=scopes)  # type: ignore[return-value]  # a stand-in


def test_required_scopes_are_checked_for_token_callers_only() -> None:
    authorize_scopes(_ctx(frozenset({"read"}), "alice", frozenset({"read", "write"})))
    authorize_scopes(_ctx(frozenset({"read"}), None, frozenset()))  # a key or anonymous caller
    with pytest.raises(GatewayError) as caught:
        authorize_scopes(_ctx(frozenset({"read", "admin"}), "alice", frozenset({"read"})))
    assert (caught.value.status, caught.value.code) == (403, ErrorCode.INSUFFICIENT_SCOPE)
    assert caught.value.headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')


# --- The model's rules -----------------------------------------------------------------------


def model_errors(**fields: object) -> dict[str, list[str]]:
    row = TokenIssuer(issuer=ISS, **fields)
    try:
        row.full_clean(exclude=["application"], validate_unique=False)
    except ValidationError as exc:
        return exc.message_dict
    return {}


def test_model_accepts_each_source_alone() -> None:
    assert model_errors(jwks_url="https://id.example.com/jwks", algorithms=["RS256"]) == {}
    assert model_errors(jwks_url="http://127.0.0.1:7200/jwks", algorithms=["ES256"]) == {}
    assert model_errors(secret_env="AUTH_HS_SECRET", algorithms=["HS256"]) == {}
    assert model_errors(introspection_url="https://id.example.com/introspect") == {}


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({}, "jwks_url"),
        ({"jwks_url": "https://a/jwks", "secret_env": "X", "algorithms": ["RS256"]}, "jwks_url"),
        ({"jwks_url": "https://a/jwks", "algorithms": ["none"]}, "algorithms"),
        ({"jwks_url": "https://a/jwks", "algorithms": ["HS256"]}, "algorithms"),
        ({"jwks_url": "https://a/jwks", "algorithms": []}, "algorithms"),
        ({"secret_env": "X", "algorithms": ["RS256"]}, "algorithms"),
        ({"secret_env": "not a name", "algorithms": ["HS256"]}, "secret_env"),
        ({"jwks_url": "http://id.example.com/jwks", "algorithms": ["RS256"]}, "jwks_url"),
        ({"introspection_url": "https://a/i", "audiences": "orders"}, "audiences"),
    ],
    ids=["none-set", "two-set", "alg-none", "hs-on-jwks", "no-algs", "rs-on-secret", "bad-env", "http", "aud-str"],
)
def test_model_refuses_inconsistent_issuers(fields: dict[str, object], field_name: str) -> None:
    assert field_name in model_errors(**fields)


def test_compiled_issuer_never_shows_its_secrets() -> None:
    record = replace(issuer(), secret=b"hs-secret-value", client_secret="client-secret-value")
    assert "secret-value" not in repr(record)


def test_concurrent_first_requests_share_one_jwks_fetch() -> None:
    import threading

    release = threading.Event()
    endpoint = FakeJwks(keys=[jwk_of(RSA_KEY, "k1")])

    def slow_fetch(url: str) -> Fetched:
        release.wait(5)
        return endpoint(url)

    cache = JwksCache(slow_fetch)
    found: list[int] = []
    threads = [
        threading.Thread(target=lambda: found.append(len(cache.keys_for(issuer(), "k1", "RS256")))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert found == [1, 1, 1, 1]
    assert endpoint.calls == 1


def test_rate_limit_by_user_counts_per_token_user_and_keys_per_application() -> None:
    from access.ratelimit import rate_counter

    app = CompiledApplication(APP_ID, "web", frozenset(), frozenset(), frozenset(), ())
    by_user = CompiledEntry("e1", APP_ID, compile_pattern("/api/v1/x"), frozenset(), frozenset(), 5, False, "user")
    by_app = replace(by_user, rate_limit_by="application")

    def counter(entry: CompiledEntry, application: object, user: str | None) -> str:
        ctx = SimpleNamespace(entry=entry, application=application, user=user, client_ip="10.0.0.9")
        return rate_counter(ctx)  # type: ignore[arg-type]  # a stand-in context

    assert counter(by_user, app, "alice") == f"user:{APP_ID}:alice"
    assert counter(by_user, app, None) == f"app:{APP_ID}"  # a key caller
    assert counter(by_app, app, "alice") == f"app:{APP_ID}"
    assert counter(by_user, None, None) == "ip:10.0.0.9"


def test_without_any_issuer_authorization_is_left_to_the_upstream() -> None:
    from access.tokens import identify_bearer

    meta = {"HTTP_AUTHORIZATION": "Bearer the-upstreams-own-token"}
    bare = SimpleNamespace(request=SimpleNamespace(META=meta), snapshot=snapshot())
    assert identify_bearer(bare) is False  # type: ignore[arg-type]  # a stand-in context
    trusting = SimpleNamespace(request=SimpleNamespace(META=meta), snapshot=snapshot(issuer()))
    with pytest.raises(GatewayError) as caught:
        identify_bearer(trusting)  # type: ignore[arg-type]
    assert (caught.value.status, caught.value.code) == (401, ErrorCode.INVALID_TOKEN)


def test_concurrent_requests_with_one_new_opaque_token_share_one_introspection(world: World) -> None:
    import threading

    release = threading.Event()
    endpoint = FakeIntrospection({"tok-c": {"active": True, "sub": "erin"}})

    def slow(url: str, form: Mapping[str, str], authorization: str | None) -> Mapping[str, object]:
        release.wait(5)
        return endpoint(url, form, authorization)

    verifier, snap = introspection_world(world, endpoint)
    verifier.introspector = Introspector(slow)
    users: list[str] = []
    threads = [threading.Thread(target=lambda: users.append(verifier.check("tok-c", snap).user)) for _ in range(4)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert users == ["erin"] * 4
    assert len(endpoint.seen) == 1


def test_issuer_secrets_come_from_the_environment_or_a_file_and_are_never_logged(
    monkeypatch: pytest.MonkeyPatch, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    from access.tokens_secrets import client_credentials, issuer_secret

    monkeypatch.setenv("WEB_HS", "short-secret")
    (tmp_path / "hs").write_text("k" * 40 + "\n")
    monkeypatch.setenv("FILE_HS_FILE", str(tmp_path / "hs"))
    monkeypatch.setenv("GATEWAY_INTROSPECTION_CLIENT_WEB_APP", "gateway")
    monkeypatch.setenv("GATEWAY_INTROSPECTION_CLIENT_WEB_APP_SECRET", "s3cret")
    monkeypatch.setenv("BOTH", "a")
    monkeypatch.setenv("BOTH_FILE", str(tmp_path / "hs"))
    with caplog.at_level("WARNING", logger="access.tokens"):
        assert issuer_secret("WEB_HS") == b"short-secret"
        assert issuer_secret("FILE_HS") == b"k" * 40
        assert issuer_secret("BOTH") is None
        assert issuer_secret("UNSET_HS") is None
    assert client_credentials("web-app") == ("gateway", "s3cret")
    assert "WEB_HS is shorter than 32 bytes" in caplog.text
    assert "short-secret" not in caplog.text
