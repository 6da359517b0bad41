"""The demo Auth API's sign-in: a demo user, RS256 access tokens and the JWKS that verifies them.

``POST /api/auth/login`` with ``{"username": "demo", "password": "demo"}`` answers
``{"access_token", "token_type": "Bearer", "expires_in"}``; ``GET /.well-known/jwks.json``
serves the public key. The signing key is generated on first start and kept in
``var/demo-auth-key.pem`` (mode 0600), so tokens survive a restart of the demo. A demo
only: one hard-coded user, no refresh tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import cache
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "http://127.0.0.1:7200"
AUDIENCE = "demo"
TOKEN_LIFETIME_S = 3600
DEMO_USERS = {"demo": ("demo", "pipelines:read pipelines:write")}  # username: (password, scopes)
KEY_PATH = Path(__file__).resolve().parents[1] / "var" / "demo-auth-key.pem"


@cache
def signing_key() -> rsa.RSAPrivateKey:
    """Return the demo's RSA key, created (and saved, owner-only) on first use."""
    if KEY_PATH.exists():
        key = serialization.load_pem_private_key(KEY_PATH.read_bytes(), password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    KEY_PATH.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(KEY_PATH, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def public_jwk() -> dict[str, object]:
    """Return the public key as a JWK with ``kid`` (a digest of the key), ``alg`` and ``use``."""
    jwk = json.loads(RSAAlgorithm.to_jwk(signing_key().public_key()))
    jwk["kid"] = hashlib.sha256(f"{jwk['n']}.{jwk['e']}".encode()).hexdigest()[:16]
    jwk.update(alg="RS256", use="sig")
    return jwk


def jwks_document() -> bytes:
    """Return the JWKS the gateway fetches (``/.well-known/jwks.json``)."""
    return json.dumps({"keys": [public_jwk()]}).encode()


def login(body: bytes) -> tuple[int, dict[str, object]]:
    """Check the demo credentials in a JSON ``body``; return (status, JSON answer)."""
    try:
        credentials = json.loads(body or b"{}")
    except ValueError:
        return 400, {"error": 'send JSON: {"username": ..., "password": ...}'}
    if not isinstance(credentials, dict):
        return 400, {"error": 'send JSON: {"username": ..., "password": ...}'}
    username = credentials.get("username")
    user = DEMO_USERS.get(username) if isinstance(username, str) else None
    if user is None or credentials.get("password") != user[0]:
        return 401, {"error": "unknown user or wrong password"}
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": username,
        "scope": user[1],
        "iat": now,
        "exp": now + TOKEN_LIFETIME_S,
    }
    token = jwt.encode(claims, signing_key(), algorithm="RS256", headers={"kid": public_jwk()["kid"]})
    return 200, {"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME_S}
