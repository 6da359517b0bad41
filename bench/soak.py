"""Hostile-client soak: 30 s of malformed and abusive traffic while a probe calls a healthy route.

    .venv/bin/python bench/soak.py [--duration 30] [--workers 2] [--attackers 6] [--slowloris 200]

Starts the bench upstream (nginx when installed, else bench/upstream.py) and the gateway
(gunicorn, the shared config) on a fresh SQLite config, then runs attacker threads that
cycle through: garbage request lines, oversized and numerous headers, invalid chunking,
truncated bodies, bodies over the cap, TRACE, WebSocket upgrades, spoofed identity
headers and a foreign Host, plus a slowloris crowd holding connections open with a
header byte now and then. Meanwhile a probe sends ``GET /api/v1/bench/probe`` every 100
ms on its own kept-alive connection.

Pass (printed at the end): the probe saw only 200s with p99 <= 50 ms, the gateway's
access log holds zero 500s and zero ``circuit_open`` (503) answers, and no worker was
restarted (gunicorn booted each worker once). Exits 1 when any of these fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import free_port, gunicorn_cmd, seed_gateway, start, start_upstream, wait_ready  # noqa: E402


def _send(port: int, data: bytes, *, read: bool = True, close_write: bool = False) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(data)
            if close_write:
                sock.shutdown(socket.SHUT_WR)
            if read:
                sock.recv(65536)
    except OSError:
        pass  # the gateway is free to drop a hostile connection


def attacks(port: int, rng: random.Random) -> list:
    big = b"X-Big: " + b"a" * 70_000 + b"\r\n"
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(300))
    path = b"/api/v1/bench/x"
    return [
        ("garbage line", lambda: _send(port, bytes(rng.getrandbits(8) for _ in range(64)) + b"\r\n\r\n")),
        ("odd digits", lambda: _send(port, b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\nContent-Length: \xb2\r\n\r\n")),
        ("oversized header", lambda: _send(port, b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\n" + big + b"\r\n")),
        ("many headers", lambda: _send(port, b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\n" + many + b"\r\n")),
        (
            "bad chunking",
            lambda: _send(port, b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        ),
        (
            "truncated body",
            lambda: _send(
                port,
                b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 65536,
                close_write=True,
            ),
        ),
        (
            "aborted chunk",
            lambda: _send(
                port,
                b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\nabc",
                close_write=True,
            ),
        ),
        (
            "over the cap",
            lambda: _send(port, b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\nContent-Length: 99999999\r\n\r\n"),
        ),
        ("trace", lambda: _send(port, b"TRACE " + path + b" HTTP/1.1\r\nHost: gw\r\n\r\n")),
        (
            "websocket",
            lambda: _send(
                port, b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            ),
        ),
        (
            "spoofed",
            lambda: _send(
                port,
                b"GET " + path + b" HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-For: 1.2.3.4\r\n"
                b"X-Original-URL: /admin\r\nX-Forwarded-Proto: https\r\nX-Consumer-ID: x\r\n\r\n",
            ),
        ),
        ("bad path", lambda: _send(port, b"GET /api/v1/bench/%2e%2e/%00 HTTP/1.1\r\nHost: gw\r\n\r\n")),
    ]


def attacker(port: int, stop: threading.Event, counts: dict[str, int], seed: int) -> None:
    rng = random.Random(seed)
    menu = attacks(port, rng)
    while not stop.is_set():
        name, attack = rng.choice(menu)
        attack()
        counts[name] = counts.get(name, 0) + 1


def slowloris(port: int, stop: threading.Event, size: int) -> None:
    crowd: list[socket.socket] = []
    while not stop.is_set():
        while len(crowd) < size:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(b"GET /api/v1/bench/slow HTTP/1.1\r\nHost: gw\r\n")
                crowd.append(sock)
            except OSError:
                break
        for sock in list(crowd):
            try:
                sock.sendall(b"X-a: b\r\n")
            except OSError:
                crowd.remove(sock)
                sock.close()
        stop.wait(1.0)
    for sock in crowd:
        sock.close()


def probe(url: str, stop: threading.Event, results: list[tuple[int, float]]) -> None:
    session = requests.Session()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            status = session.get(url, timeout=5).status_code
        except requests.RequestException:
            status = 0
        results.append((status, (time.perf_counter() - started) * 1000))
        stop.wait(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--attackers", type=int, default=6, help="threads cycling through the attacks")
    parser.add_argument("--slowloris", type=int, default=200, help="connections held open by the slow crowd")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "CELERY_"))},
        "SECRET_KEY": "soak-secret-key-not-for-production",
        "DATABASE_URL": f"sqlite:///{work}/soak.sqlite3",
        "ALLOWED_HOSTS": "gw,127.0.0.1",
        "GATEWAY_IGNORE_DOTENV": "1",
        "GATEWAY_METRICS_DIR": str(work / "metrics"),
        "WEB_CONCURRENCY": str(args.workers),
        "PYTHONUNBUFFERED": "1",
    }
    upstream_port, gateway_port = free_port(), free_port()
    upstream = start_upstream(upstream_port, env, work)
    seed_gateway(env, f"http://127.0.0.1:{upstream_port}")
    gateway = start("gateway", gunicorn_cmd("gateway_project.wsgi:application", gateway_port), env, work)
    processes = [upstream, gateway]
    try:
        url = f"http://127.0.0.1:{gateway_port}"
        wait_ready(url + "/healthz")
        requests.get(url + "/api/v1/bench/warm", timeout=5)
        stop = threading.Event()
        counts: dict[str, int] = {}
        results: list[tuple[int, float]] = []
        threads = [
            threading.Thread(target=attacker, args=(gateway_port, stop, counts, i)) for i in range(args.attackers)
        ]
        threads.append(threading.Thread(target=slowloris, args=(gateway_port, stop, args.slowloris)))
        threads.append(threading.Thread(target=probe, args=(url + "/api/v1/bench/probe", stop, results)))
        load_before = os.getloadavg()[0]
        for thread in threads:
            thread.start()
        time.sleep(args.duration)
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        load_after = os.getloadavg()[0]
    finally:
        for process in processes:
            process.stop()

    log = (work / "gateway.log").read_text(errors="replace").splitlines()
    statuses = []
    for line in log:
        if line.startswith("{") and '"access"' not in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "status" in record and "request_id" in record:
                statuses.append(record["status"])
    boots = sum("Booting worker" in line for line in log)
    probe_codes = [status for status, _ in results]
    latencies = sorted(ms for _, ms in results)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan")
    errors_500 = sum(status == 500 for status in statuses)
    circuit_open = sum(status == 503 for status in statuses)

    print(
        f"soak: {args.duration:.0f} s, {args.attackers} attackers + {args.slowloris} slowloris, {args.workers} workers"
    )
    print(f"load average: {load_before:.2f} before, {load_after:.2f} after")
    print(f"attacks sent: {sum(counts.values())} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    refused = sum(code != 200 for code in probe_codes)
    print(f"probe: {len(probe_codes)} calls, non-200: {refused}, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"access log: {len(statuses)} lines, 500s: {errors_500}, 503s (circuit_open): {circuit_open}")
    print(f"worker boots: {boots} (workers: {args.workers})")
    ok = (
        probe_codes
        and all(code == 200 for code in probe_codes)
        and p99 <= 50
        and errors_500 == 0
        and circuit_open == 0
        and boots == args.workers
    )
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
