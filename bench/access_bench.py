"""Measure what access control costs: a keyed, whitelisted, rate-limited request vs an anonymous public one.

Starts a one-worker gateway (the shared gunicorn config) and a keep-alive upstream in
another process, sends the two kinds of request alternately from one client, and
compares the gateway's own ``duration_ms`` (access log) per kind. Target (issue 4):
keyed / public <= 1.15, the median over rounds.

The access log rounds ``duration_ms`` to 0.1 ms. Around 0.6 ms one step of 0.1 ms is
16 %, more than the margin being measured, so a plain median can only say 1.0 or
1.17. Each round's median is therefore taken as ``statistics.median_grouped`` (the
median of data rounded to classes of 0.1 ms, interpolated inside its class); the
plain median is printed beside it.

    .venv/bin/python bench/access_bench.py [--requests 1000] [--rounds 3] [--limit-public]

Uses ``DATABASE_URL`` and ``REDIS_URL`` when set (Redis: realistic shared counting),
else a throwaway SQLite file and the in-process cache.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve_upstream(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), _Upstream).serve_forever()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _seed(upstream_url: str, limit_public: bool) -> str:
    """Create the bench service and applications; return the plaintext key."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from access.models import Application, EndpointWhitelist
    from access.services import api_key_create
    from routing.models import ServiceConfig

    ServiceConfig.objects.filter(service_name="bench").delete()
    Application.objects.filter(name__in=["bench-public", "bench-keyed"]).delete()
    service = ServiceConfig(service_name="bench", default_url=upstream_url)
    service.full_clean()
    service.save()
    public = Application.objects.create(name="bench-public")
    EndpointWhitelist.objects.create(
        application=public,
        endpoint_path="/api/v1/bench/public/*",
        is_public=True,
        rate_limit=10_000_000 if limit_public else None,
    )
    keyed = Application.objects.create(name="bench-keyed", allowed_services=["bench"])
    EndpointWhitelist.objects.create(
        application=keyed, endpoint_path="/api/v1/bench/keyed/*", allowed_methods=["GET"], rate_limit=10_000_000
    )
    _, plaintext = api_key_create(application=keyed, name="bench")
    return plaintext


def _durations(log_path: Path) -> dict[str, list[float]]:
    """Return the gateway's duration_ms per request kind, from the JSON access log."""
    found: dict[str, list[float]] = {"public": [], "keyed": []}
    for line in log_path.read_text(errors="replace").splitlines():
        if '"duration_ms"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        fields = record.get("access", record)
        path, status = str(fields.get("path", "")), fields.get("status")
        kind = "keyed" if "/bench/keyed/" in path else "public" if "/bench/public/" in path else None
        if kind and status == 200 and "warmup" not in path:
            found[kind].append(float(fields["duration_ms"]))
    return found


def _median(values: list[float]) -> float:
    """Return the median of ``duration_ms`` values, interpolated within their 0.1 ms log resolution.

    Falls back to the plain median when the values are logged more finely than that.
    """
    if all(round(value, 1) == value for value in values):
        return statistics.median_grouped(values, interval=0.1)
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests of each kind per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--limit-public", action="store_true", help="rate-limit the public entry too (isolates the key's cost)"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="access-bench-"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}")
    os.environ.setdefault("SECRET_KEY", "access-bench-throwaway-secret")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    os.environ["GATEWAY_IGNORE_DOTENV"] = "1"

    upstream_port, gateway_port = _free_port(), _free_port()
    upstream = multiprocessing.Process(target=_serve_upstream, args=(upstream_port,), daemon=True)
    upstream.start()
    key = _seed(f"http://127.0.0.1:{upstream_port}", args.limit_public)

    log_path = workdir / "gateway.log"
    env = dict(os.environ, WEB_CONCURRENCY="1", GATEWAY_LOG_FORMAT="json", ALLOWED_HOSTS="*", PYTHONUNBUFFERED="1")
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    with log_path.open("ab") as log:
        gateway = subprocess.Popen(
            [
                gunicorn,
                "-c",
                str(ROOT / "gateway_project" / "gunicorn.conf.py"),
                "-b",
                f"127.0.0.1:{gateway_port}",
                "gateway_project.wsgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{gateway_port}/api/v1/bench"
    session = requests.Session()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if session.get(base + "/public/warmup", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"gateway did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        for _ in range(200):
            session.get(base + "/public/warmup", timeout=5)
            session.get(base + "/keyed/warmup", headers={"X-API-Key": key}, timeout=5)

        ratios, plain_ratios, client_ratios = [], [], []
        for round_no in range(args.rounds):
            offset = {kind: len(values) for kind, values in _durations(log_path).items()}
            client: dict[str, list[float]] = {"public": [], "keyed": []}
            for i in range(args.requests):
                for kind, headers in (("public", {}), ("keyed", {"X-API-Key": key})):
                    started = time.perf_counter()
                    response = session.get(f"{base}/{kind}/item/{i}", headers=headers, timeout=5)
                    client[kind].append((time.perf_counter() - started) * 1000)
                    if response.status_code != 200:
                        raise SystemExit(f"{kind} request failed: {response.status_code} {response.text}")
            time.sleep(0.5)  # let the last access-log lines reach the file
            gateway_ms = {kind: values[offset[kind] :] for kind, values in _durations(log_path).items()}
            public_ms, keyed_ms = _median(gateway_ms["public"]), _median(gateway_ms["keyed"])
            ratios.append(keyed_ms / public_ms)
            plain_ratios.append(statistics.median(gateway_ms["keyed"]) / statistics.median(gateway_ms["public"]))
            client_ratios.append(statistics.median(client["keyed"]) / statistics.median(client["public"]))
            print(
                f"round {round_no + 1}: gateway median public {public_ms:.3f} ms, keyed {keyed_ms:.3f} ms "
                f"(ratio {ratios[-1]:.3f}; plain median {plain_ratios[-1]:.3f}); "
                f"client median public {statistics.median(client['public']):.2f} ms, "
                f"keyed {statistics.median(client['keyed']):.2f} ms (ratio {client_ratios[-1]:.3f})"
            )
        verified = len(re.findall(r"API key gk_\w+ verified", log_path.read_text(errors="replace")))
        print(
            f"median ratio keyed/public: gateway {statistics.median(ratios):.3f} "
            f"(plain median {statistics.median(plain_ratios):.3f}), "
            f"client {statistics.median(client_ratios):.3f} (target <= 1.15); "
            f"argon2 verifications logged: {verified}; redis: {'yes' if os.environ.get('REDIS_URL') else 'no'}"
        )
    finally:
        gateway.terminate()
        gateway.wait(15)
        upstream.terminate()


if __name__ == "__main__":
    main()
