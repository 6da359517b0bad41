"""Bearer tokens through live gunicorn gateways (SPEC §4.5a).

The test starts a real JWKS server and a real RFC 7662 introspection server on
loopback, generates the signing keys itself and rotates them mid-test; an echo
upstream reports the headers that reached it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management import call_command
from jwt.algorithms import RSAAlgorithm

from access.models import Application, TokenIssuer
from access.ratelimit import WINDOW_S, window_end
from routing.models import ServiceConfig
from tests.support.backends import requires_redis
from tests.support.builders import make_app, make_key, make_service
from tests.support.servers import GunicornProcess
from tests.support.upstream import EchoUpstream, free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

ISS = "https://id.test.example"
HS_SECRET = "hs-secret-for-tests-0123456789abcdef"
CLIENT_SECRET = "introspection-client-secret"


# --- The issuer's side: a JWKS server and an introspection server -----------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _IssuerServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _down(self) -> bool:
        # A stopped server also drops kept-alive connections without an answer.
        if self.server.down:
            self.close_connection = True
        return self.server.down

    def do_GET(self) -> None:
        if self._down():
            return
        self.server.jwks_hits += 1
        self._json(200, {"keys": list(self.server.keys)}, self.server.cache_control)

    def do_POST(self) -> None:
        if self._down():
            return
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(part.split("=", 1) for part in self.rfile.read(length).decode().split("&") if "=" in part)
        self.server.introspections.append((form.get("token", ""), self.headers.get("Authorization")))
        answer = self.server.answers.get(form.get("token", ""), {"active": False})
        self._json(200, answer, "no-store")

    def _json(self, status: int, payload: object, cache_control: str) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", cache_control)
        self.end_headers()
        self.wfile.write(data)


class _IssuerServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.keys: list[dict[str, object]] = []
        self.cache_control = "max-age=600"
        self.jwks_hits = 0
        self.answers: dict[str, dict[str, object]] = {}
        self.introspections: list[tuple[str, str | None]] = []
        self.down = False


@dataclass
class IssuerServer:
    """A JWKS (GET) and introspection (POST) endpoint on a loopback port that can go down and come back."""

    port: int = field(default_factory=free_port)
    server: _IssuerServer | None = None

    def start(self) -> IssuerServer:
        previous = self.server
        self.server = _IssuerServer(self.port)
        if previous is not None:
            self.server.keys, self.server.cache_control = previous.keys, previous.cache_control
            self.server.answers, self.server.introspections = previous.answers, previous.introspections
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.down = True
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state(self) -> _IssuerServer:
        assert self.server is not None
        return self.server


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, object]:
    return {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, "use": "sig"}


def token(key: object, kid: str | None = "k1", alg: str = "RS256", **claims: object) -> str:
    now = int(time.time())
    payload = {"iss": ISS, "sub": "alice", "aud": "orders", "iat": now, "exp": now + 600, "scope": "orders:read"}
    payload.update(claims)
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=alg, headers=headers)  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def confused_token(key: rsa.RSAPrivateKey) -> str:
    """HS256 "signed" with the issuer's RSA public key as the HMAC secret (the algorithm confusion attack)."""
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    claims = {"iss": ISS, "sub": "mallory", "aud": "orders", "iat": now, "exp": now + 600}
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'kid': 'k1'}).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"


def unsigned_token() -> str:
    now = int(time.time())
    claims = {"iss": ISS, "sub": "mallory", "aud": "orders", "iat": now, "exp": now + 600}
    return f"{_b64(json.dumps({'alg': 'none', 'kid': 'k1'}).encode())}.{_b64(json.dumps(claims).encode())}."


# --- The gateway's side --------------------------------------------------------------------------


def trust(app: Application, **fields: object) -> TokenIssuer:
    row = TokenIssuer(application=app, **fields)
    row.full_clean()
    row.save()
    return row


@pytest.fixture
def idp() -> Iterator[IssuerServer]:
    server = IssuerServer().start()
    yield server
    server.stop()


def call(gateway: GunicornProcess, path: str, bearer: str | None = None, **headers: str) -> requests.Response:
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    if bearer is not None:
        sent["Authorization"] = f"Bearer {bearer}"
    return requests.get(gateway.url + path, headers=sent, timeout=10)


def assert_refused(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    if status in (401, 403):
        error = "insufficient_scope" if code == "insufficient_scope" else "invalid_token"
        assert response.headers["WWW-Authenticate"].startswith(f'Bearer error="{error}"')


@dataclass
class World:
    gateway: GunicornProcess
    upstream: EchoUpstream
    idp: IssuerServer
    key: rsa.RSAPrivateKey
    app: Application


@pytest.fixture
def world(gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream, idp: IssuerServer) -> World:
    key = new_key()
    idp.state.keys = [public_jwk(key, "k1")]
    make_service("orders", echo_upstream.url)
    app = make_app(
        "web",
        entries=[
            {"path": "/api/v1/orders/*", "methods": ["GET"]},
            {"path": "/api/v1/orders/admin/*"},
        ],
    )
    admin_entry = app.whitelist.get(endpoint_path="/api/v1/orders/admin/*")
    admin_entry.required_scopes = ["orders:admin"]
    admin_entry.save()
    trust(app, issuer=ISS, jwks_url=f"{idp.url}/jwks", audiences=["orders"], algorithms=["RS256"])
    trust(app, issuer="hs-issuer", secret_env="TEST_HS_SECRET", algorithms=["HS256"])
    dormant = make_app("dormant", is_active=False, entries=[{"path": "/api/v1/orders/*"}])
    trust(dormant, issuer="dormant-issuer", secret_env="TEST_HS_SECRET", algorithms=["HS256"])
    trust(app, issuer="off-issuer", secret_env="TEST_HS_SECRET", algorithms=["HS256"], is_active=False)
    gateway = gateway_server(workers=1, env={"TEST_HS_SECRET": HS_SECRET, "REDIS_URL": ""})
    return World(gateway, echo_upstream, idp, key, app)


def test_a_valid_token_calls_as_the_issuers_application_with_user_headers(world: World) -> None:
    bearer = token(world.key, scope="orders:read orders:write")
    response = call(world.gateway, "/api/v1/orders/7", bearer, X_Authenticated_User="root", X_Consumer_ID="forged")
    assert response.status_code == 200, response.text
    seen = world.upstream.last
    assert seen.header("X-Authenticated-User") == "alice"
    assert seen.header("X-Authenticated-Scope") == "orders:read orders:write"
    assert seen.header("X-Consumer-ID") == str(world.app.id)
    assert seen.header("X-Consumer-Name") == "web"
    assert seen.header("Authorization") == f"Bearer {bearer}"  # forwarded unchanged
    hs = jwt.encode({"iss": "hs-issuer", "sub": "bob", "exp": int(time.time()) + 60}, HS_SECRET, algorithm="HS256")
    assert call(world.gateway, "/api/v1/orders/8", hs).status_code == 200
    assert world.upstream.last.header("X-Authenticated-User") == "bob"
    log = world.gateway.log()
    assert bearer not in log and HS_SECRET not in log
    assert '"user_id":"alice"' in log


def test_each_attack_and_bad_token_is_refused_with_its_code(world: World) -> None:
    assert call(world.gateway, "/api/v1/orders/1", token(world.key)).status_code == 200  # keys fetched once
    forwarded = len(world.upstream.received)
    other_key = new_key()
    now = int(time.time())
    cases = {
        "alg none": (unsigned_token(), 401, "invalid_token"),
        "HS256 signed with the RSA public key": (confused_token(world.key), 401, "invalid_token"),
        "kid not in the set": (token(other_key, kid="k-unknown"), 401, "invalid_token"),
        "signed by another key": (token(other_key), 401, "invalid_token"),
        "another audience": (token(world.key, aud="billing"), 401, "invalid_token"),
        "expired": (token(world.key, exp=now - 120, iat=now - 900), 401, "expired_token"),
        "not yet valid": (token(world.key, nbf=now + 300), 401, "invalid_token"),
        "unknown issuer": (token(world.key, iss="https://evil.example"), 401, "invalid_token"),
        "inactive issuer": (
            jwt.encode({"iss": "off-issuer", "sub": "x", "exp": now + 60}, HS_SECRET),
            401,
            "invalid_token",
        ),
        "inactive application": (
            jwt.encode({"iss": "dormant-issuer", "sub": "x", "exp": now + 60}, HS_SECRET),
            401,
            "invalid_token",
        ),
        "malformed": ("not a token!", 401, "invalid_token"),
    }
    for name, (bearer, status, code) in cases.items():
        response = call(world.gateway, "/api/v1/orders/1", bearer)
        assert response.status_code == status, (name, response.text)
        assert_refused(response, status, code)
    assert len(world.upstream.received) == forwarded  # no refused request reached the upstream
    assert world.idp.state.jwks_hits == 2  # the first fetch, then one refetch for the unknown kid


def test_required_scopes_are_a_403_after_the_endpoint_matched(world: World) -> None:
    assert_refused(call(world.gateway, "/api/v1/orders/admin/x", token(world.key)), 403, "insufficient_scope")
    response = call(world.gateway, "/api/v1/orders/admin/x", token(world.key, scope="orders:read orders:admin"))
    assert response.status_code == 200, response.text


def test_with_a_key_the_key_decides_and_authorization_passes_untouched(world: World) -> None:
    _, plaintext = make_key(world.app)
    time.sleep(1.2)  # the new key reaches the worker
    response = call(world.gateway, "/api/v1/orders/1", "garbage!", X_API_Key=plaintext)
    assert response.status_code == 200, response.text
    assert world.upstream.last.header("Authorization") == "Bearer garbage!"
    assert world.upstream.last.header("X-Authenticated-User") is None


def test_rotation_and_a_jwks_outage(world: World) -> None:
    world.idp.state.cache_control = "max-age=2"
    first = token(world.key)
    assert call(world.gateway, "/api/v1/orders/1", first).status_code == 200
    # Rotate: the issuer publishes k2 beside k1; a k2 token is accepted after one refetch.
    key2 = new_key()
    world.idp.state.keys = [public_jwk(world.key, "k1"), public_jwk(key2, "k2")]
    hits = world.idp.state.jwks_hits
    assert call(world.gateway, "/api/v1/orders/2", token(key2, kid="k2")).status_code == 200
    assert world.idp.state.jwks_hits == hits + 1
    # Withdraw k1: once the cached set is refreshed (max-age 2 s), k1 tokens are refused,
    # the remembered one included.
    world.idp.state.keys = [public_jwk(key2, "k2")]
    deadline = time.monotonic() + 10
    while call(world.gateway, "/api/v1/orders/1", first).status_code == 200:
        assert time.monotonic() < deadline, "k1 is still accepted after the refresh"
        time.sleep(0.3)
    assert_refused(call(world.gateway, "/api/v1/orders/1", first), 401, "invalid_token")
    # The JWKS server goes down: cached keys keep verifying (a token never seen before too).
    world.idp.stop()
    time.sleep(2.5)
    assert call(world.gateway, "/api/v1/orders/3", token(key2, kid="k2", sub="carol")).status_code == 200
    # A new issuer whose keys were never fetched cannot be served: 503, not 500.
    trust(world.app, issuer="https://new.test.example", jwks_url=f"{world.idp.url}/other", algorithms=["RS256"])
    time.sleep(1.5)
    response = call(world.gateway, "/api/v1/orders/4", token(key2, kid="k2", iss="https://new.test.example"))
    assert_refused(response, 503, "issuer_unavailable")
    world.idp.start()


def test_an_issuer_change_reaches_every_worker(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream, idp: IssuerServer
) -> None:
    key = new_key()
    idp.state.keys = [public_jwk(key, "k1")]
    make_service("orders", echo_upstream.url)
    app = make_app("web", entries=[{"path": "/api/v1/orders/*"}])
    issuer = trust(app, issuer=ISS, jwks_url=f"{idp.url}/jwks", algorithms=["RS256"])
    gateway = gateway_server(workers=2)
    bearer = token(key)
    for _ in range(6):  # fresh connections: both workers verify and remember it
        assert call(gateway, "/api/v1/orders/1", bearer).status_code == 200
    issuer.audiences = ["billing"]
    issuer.save()
    changed_at = time.monotonic()
    statuses: list[int] = []
    while time.monotonic() - changed_at < 5:
        statuses = [call(gateway, "/api/v1/orders/1", bearer).status_code for _ in range(8)]
        if set(statuses) == {401}:
            break
        time.sleep(0.1)
    assert set(statuses) == {401}, statuses
    assert time.monotonic() - changed_at < 2.0  # SPEC §6: 1 s, plus this loop's own requests


@requires_redis
def test_per_user_rate_limits_are_shared_by_every_worker_in_redis(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream, idp: IssuerServer
) -> None:
    key = new_key()
    idp.state.keys = [public_jwk(key, "k1")]
    make_service("orders", echo_upstream.url)
    app = make_app("web", entries=[{"path": "/api/v1/orders/*", "rate_limit": 3}])
    entry = app.whitelist.get()
    entry.rate_limit_by = "user"
    entry.save()
    trust(app, issuer=ISS, jwks_url=f"{idp.url}/jwks", algorithms=["RS256"])
    env = {"REDIS_URL": os.environ["REDIS_URL"], "GATEWAY_CACHE_PREFIX": f"gw-tok-{time.time_ns()}"}
    gateway = gateway_server(workers=2, env=env)
    for user in ("alice", "bob"):
        left = window_end(f"{entry.id}:user:{app.id}:{user}", WINDOW_S, time.time()) - time.time()
        if left < 4:
            time.sleep(left + 1.1)
    alice = [call(gateway, "/api/v1/orders/1", token(key, sub="alice")).status_code for _ in range(5)]
    bob = [call(gateway, "/api/v1/orders/1", token(key, sub="bob")).status_code for _ in range(3)]
    assert alice == [200, 200, 200, 429, 429]
    assert bob == [200, 200, 200]


def test_opaque_tokens_are_introspected_with_client_credentials_and_cached(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream, idp: IssuerServer
) -> None:
    make_service("orders", echo_upstream.url)
    app = make_app("web-app", entries=[{"path": "/api/v1/orders/*"}])
    trust(app, issuer="https://opaque.test.example", introspection_url=f"{idp.url}/introspect")
    idp.state.answers = {
        "opaque-good": {"active": True, "sub": "dana", "scope": "orders:read", "exp": int(time.time()) + 300}
    }
    env = {
        "GATEWAY_INTROSPECTION_CLIENT_WEB_APP": "gateway",
        "GATEWAY_INTROSPECTION_CLIENT_WEB_APP_SECRET": CLIENT_SECRET,
    }
    gateway = gateway_server(workers=1, env=env)
    for _ in range(3):
        assert call(gateway, "/api/v1/orders/1", "opaque-good").status_code == 200
    assert echo_upstream.last.header("X-Authenticated-User") == "dana"
    assert idp.state.introspections == [
        ("opaque-good", "Basic " + base64.b64encode(f"gateway:{CLIENT_SECRET}".encode()).decode())
    ]
    assert_refused(call(gateway, "/api/v1/orders/1", "opaque-revoked"), 401, "invalid_token")
    assert_refused(call(gateway, "/api/v1/orders/1", "opaque-revoked"), 401, "invalid_token")
    assert len(idp.state.introspections) == 2  # the negative answer is remembered (5 s at most)
    idp.stop()
    assert_refused(call(gateway, "/api/v1/orders/1", "opaque-new"), 503, "issuer_unavailable")
    assert call(gateway, "/api/v1/orders/1", "opaque-good").status_code == 200  # still remembered
    assert CLIENT_SECRET not in gateway.log()


def test_quick_start_log_in_then_call_pipelines_with_the_token(
    gateway_server: Callable[..., GunicornProcess],
) -> None:
    """The README's two curl calls: sign in at the demo Auth API, call /api/v1/pipelines with the token."""
    from demo.upstream import make_server

    servers = {name: make_server(name, "127.0.0.1", free_port()) for name in ("auth", "pipeline")}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        call_command("gateway_seed_demo", "--no-superuser", stdout=io.StringIO())
        for name, server in servers.items():
            service = ServiceConfig.objects.get(service_name=name)
            service.default_url = f"http://127.0.0.1:{server.server_address[1]}"
            service.save()
            service.versions.update(url=service.default_url)
        issuer = TokenIssuer.objects.get()
        issuer.jwks_url = f"http://127.0.0.1:{servers['auth'].server_address[1]}/.well-known/jwks.json"
        issuer.save()
        gateway = gateway_server()
        login = requests.post(
            gateway.url + "/api/v1/auth/login", json={"username": "demo", "password": "demo"}, timeout=10
        )
        assert login.status_code == 200, login.text
        access_token = login.json()["access_token"]
        assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", access_token)
        pipelines = call(gateway, "/api/v1/pipelines", access_token)
        assert pipelines.status_code == 200, pipelines.text
        assert pipelines.json()["service"] == "pipeline"
        assert pipelines.json()["headers"]["X-Authenticated-User"] == "demo"
        wrong = requests.post(
            gateway.url + "/api/v1/auth/login", json={"username": "demo", "password": "x"}, timeout=10
        )
        assert wrong.status_code == 401
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()


def test_an_https_jwks_is_verified_against_the_configured_ca(
    gateway_server: Callable[..., GunicornProcess], echo_upstream: EchoUpstream, tmp_path
) -> None:
    import ssl
    import subprocess

    cert, private = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(private), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    server = _IssuerServer(0)
    key = new_key()
    server.keys = [public_jwk(key, "k1")]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, private)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        make_service("orders", echo_upstream.url)
        app = make_app("web", entries=[{"path": "/api/v1/orders/*"}])
        trust(app, issuer=ISS, jwks_url=f"https://127.0.0.1:{server.server_address[1]}/jwks", algorithms=["RS256"])
        untrusting = gateway_server(workers=1)
        assert_refused(call(untrusting, "/api/v1/orders/1", token(key)), 503, "issuer_unavailable")
        assert server.jwks_hits == 0  # the handshake failed: no key was served
        untrusting.stop()
        trusting = gateway_server(workers=1, env={"GATEWAY_UPSTREAM_CA_BUNDLE": str(cert)})
        assert call(trusting, "/api/v1/orders/1", token(key)).status_code == 200
        assert server.jwks_hits == 1
    finally:
        server.shutdown()
        server.server_close()
