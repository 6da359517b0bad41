"""In-process cost of a bearer token: a verified-token memo hit against a full RS256 verification.

    .venv/bin/python bench/token_memo.py

Builds a JWKS issuer and a snapshot by hand (no server, no database), verifies one
RS256 token once, then times ``TokenVerifier.check`` answering it from the memo and,
with the memo emptied before every call, verifying it in full (header and claims
parsed, key looked up, signature checked). Prints the best of five repeats.
"""

from __future__ import annotations

import json
import os
import sys
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-not-a-secret")
os.environ.setdefault("GATEWAY_IGNORE_DOTENV", "1")

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from access.introspection import Introspector
from access.jwks import Fetched, JwksCache
from access.tokens import TokenVerifier
from gateway_core.snapshot import CompiledApplication, CompiledIssuer, Snapshot

ISS = "https://bench-issuer.example"


def main() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = json.dumps({"keys": [{**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1"}]}).encode()
    issuer = CompiledIssuer(
        id="i1",
        issuer=ISS,
        application_id="a1",
        kind="jwks",
        jwks_url="https://bench-issuer.example/jwks",
        introspection_url=None,
        audiences=frozenset({"bench"}),
        algorithms=frozenset({"RS256"}),
        user_claim="sub",
        scope_claim="scope",
        leeway_s=30,
    )
    snapshot = Snapshot(
        version=1,
        loaded_at=datetime.now(tz=UTC),
        routes=(),
        routes_by_prefix={},
        applications={"a1": CompiledApplication("a1", "bench", frozenset(), frozenset(), frozenset(), ())},
        keys={},
        public_entries=(),
        issuers={ISS: issuer},
    )
    now = int(time.time())
    claims = {"iss": ISS, "sub": "bench-user", "aud": "bench", "scope": "bench:read", "iat": now, "exp": now + 3600}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

    def verifier(memo_size: int) -> TokenVerifier:
        cache = JwksCache(lambda url: Fetched(jwks, "max-age=86400"))
        return TokenVerifier("bench", jwks=cache, introspector=Introspector(_no_post), memo_size=memo_size)

    warm = verifier(10_000)
    warm.check(token, snapshot)
    hit_us = min(timeit.repeat(lambda: warm.check(token, snapshot), number=20_000, repeat=5)) / 20_000 * 1e6
    cold = verifier(1)

    def full_check() -> None:
        cold._memo.retain(lambda _: False)
        cold.check(token, snapshot)

    full_us = min(timeit.repeat(full_check, number=300, repeat=5)) / 300 * 1e6
    print(
        f"memo hit {hit_us:.1f} us; full RS256 verification {full_us:.0f} us "
        f"({len(token)}-char token; load average {os.getloadavg()[0]:.1f})"
    )


def _no_post(url: str, form: object, authorization: object) -> dict[str, object]:
    raise AssertionError("no introspection in this benchmark")


if __name__ == "__main__":
    import django

    django.setup()
    main()
