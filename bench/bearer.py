"""The benchmark's bearer-token route: an RS256 issuer with its JWKS served from this process.

``bench/run.py`` seeds an application that trusts the issuer, with a whitelist entry
shaped like the keyed route's (rate limit, two weighted versions), and loads it with
one token: after the first request the gateway answers it from the verified-token
memo, which is what the ``bearer / public`` ratio measures.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://bench-issuer.example"
KID = "bench-1"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class _JwksHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        jwk = {**json.loads(RSAAlgorithm.to_jwk(_KEY.public_key())), "kid": KID, "use": "sig"}
        body = json.dumps({"keys": [jwk]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=86400")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def start_jwks_server(port: int) -> ThreadingHTTPServer:
    """Serve the issuer's JWKS on ``127.0.0.1:port`` from a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _JwksHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def bearer_token(lifetime_s: int = 3600) -> str:
    """Return an RS256 token of the issuer for user ``bench-user``."""
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "bench-user", "aud": "bench", "scope": "bench:read", "iat": now}
    claims["exp"] = now + lifetime_s
    return jwt.encode(claims, _KEY, algorithm="RS256", headers={"kid": KID})


def seed_bearer(
    python: str, root: Path, env: dict[str, str], jwks_url: str, endpoint_path: str = "/api/v1/bench-keyed/*"
) -> None:
    """Add the bearer route's application, entry (on ``endpoint_path``) and token issuer."""
    seed = f"""
from access.models import Application, EndpointWhitelist, TokenIssuer
app = Application(name="bench-bearer"); app.full_clean(); app.save()
entry = EndpointWhitelist(application=app, endpoint_path={endpoint_path!r}, rate_limit=1_000_000_000,
                          required_scopes=["bench:read"])
entry.full_clean(); entry.save()
issuer = TokenIssuer(application=app, issuer={ISSUER!r}, jwks_url={jwks_url!r}, audiences=["bench"],
                     algorithms=["RS256"])
issuer.full_clean(); issuer.save()
"""
    subprocess.run([python, "manage.py", "shell", "-c", seed], cwd=root, env=env, check=True, capture_output=True)
