"""Benchmark: gunicorn worker classes under 200 concurrent requests to a 1 s upstream.

    .venv/bin/python bench/concurrency.py [--worker-classes gevent,gthread,sync] [--concurrency 200]
        [--delay 1.0] [--timeout 10] [--workers 2] [--threads 16] [--fast-requests 20]

Starts a slow upstream (bench/upstream.py with a delay: a gevent socket server that
answers every request after ``--delay`` seconds and holds thousands of connections), a
fast upstream (nginx when installed, else bench/upstream.py), and seeds a fresh SQLite
config with two public routes: ``/api/v1/slow/`` and ``/api/v1/fast/``. Then, for each
worker class, it starts the gateway (gunicorn, the shared config, ``--workers`` workers;
gthread with ``--threads`` threads each), opens ``--concurrency`` connections at once
with one GET each to the slow route, and while they are in flight sends up to
``--fast-requests`` sequential GETs to the fast route. A request that fails or has no
answer within ``--timeout`` seconds is an error, and it counts as infinitely slow in
the percentiles. The same round against the slow upstream directly comes first: what
the client and this machine manage without a gateway.

Prints per worker class: slow requests completed / errors, their p50 / p99 / max wall
time, the round's total wall time, and the fast route's p50 / max while loaded. The
machine is shared: run it when the load average is low, and only a couple of times.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402 - after the path setup
    PYTHON,
    Process,
    free_port,
    gunicorn_cmd,
    start,
    start_upstream,
    wait_ready,
)

WORKER_CLASSES = ("gevent", "gthread", "sync")
# Pause between two fast-route requests, so that they sample the whole slow round.
FAST_GAP_S = 0.03
# Head start of the slow requests before the first fast one: they are all connected by then.
FAST_START_S = 0.2


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: its wall time in seconds, ``math.inf`` with the reason when it failed."""

    seconds: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Round:
    """What one round measured: every slow request, every fast probe, the round's wall time."""

    slow: tuple[Sample, ...]
    wall_s: float
    fast: tuple[Sample, ...]


class RequestFailed(Exception):
    """The answer was not a 200."""


async def timed_get(url: str, timeout_s: float) -> Sample:
    """GET ``url`` on a new connection and time it until the whole body has arrived.

    A request fails on any answer but a 200, a connection error, or no complete
    answer within ``timeout_s`` seconds.
    """
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
    started = time.perf_counter()
    try:
        await asyncio.wait_for(_exchange(parts.hostname or "127.0.0.1", parts.port or 80, request), timeout_s)
    except TimeoutError:
        return Sample(math.inf, "timeout")
    except RequestFailed as exc:
        return Sample(math.inf, str(exc))
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return Sample(math.inf, type(exc).__name__)
    return Sample(time.perf_counter() - started)


async def _exchange(host: str, port: int, request: bytes) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RequestFailed(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        length: int | None = None
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length is None:
            await reader.read()  # no length: the body ends when the server closes
        else:
            await reader.readexactly(length)
    finally:
        writer.close()


async def measure_round(slow_url: str, fast_url: str, concurrency: int, fast_requests: int, timeout_s: float) -> Round:
    """Fire ``concurrency`` GETs at ``slow_url`` at once and probe ``fast_url`` while they run."""
    started = time.perf_counter()
    slow = asyncio.gather(*(timed_get(slow_url, timeout_s) for _ in range(concurrency)))
    await asyncio.sleep(FAST_START_S)
    fast: list[Sample] = []
    while len(fast) < fast_requests and not slow.done():
        fast.append(await timed_get(fast_url, timeout_s))
        await asyncio.sleep(FAST_GAP_S)
    slow_samples = await slow
    return Round(tuple(slow_samples), time.perf_counter() - started, tuple(fast))


def percentile(samples: tuple[Sample, ...], pct: float) -> float:
    """Return the nearest-rank ``pct`` percentile of the samples' seconds (``math.nan`` when empty)."""
    if not samples:
        return math.nan
    ordered = sorted(sample.seconds for sample in samples)
    return ordered[max(math.ceil(pct / 100 * len(ordered)) - 1, 0)]


def errors(samples: tuple[Sample, ...]) -> Counter[str]:
    """Count the failed samples by reason."""
    return Counter(sample.error for sample in samples if sample.error is not None)


def seconds(value: float) -> str:
    """Format a latency in seconds for the table: failed requests show as ``fail``."""
    if math.isinf(value):
        return "fail"
    return "-" if math.isnan(value) else f"{value:.2f} s"


def millis(value: float) -> str:
    """Format a latency in milliseconds for the table: failed requests show as ``fail``."""
    if math.isinf(value):
        return "fail"
    return "-" if math.isnan(value) else f"{value * 1000:.0f} ms"


def wait_listening(port: int, timeout_s: float = 60.0) -> None:
    """Return once something accepts connections on ``127.0.0.1:port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port}")


def seed_routes(env: dict[str, str], slow_url: str, fast_url: str) -> None:
    """Create the slow and fast services and a public application open to both."""
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    seed = f"""
from access.models import Application, EndpointWhitelist
from routing.models import ServiceConfig
for name, url in (("slow", {slow_url!r}), ("fast", {fast_url!r})):
    service = ServiceConfig(service_name=name, default_url=url)
    service.full_clean(); service.save()
app = Application(name="bench-public"); app.full_clean(); app.save()
EndpointWhitelist(application=app, endpoint_path="/api/v1/*", is_public=True).save()
"""
    subprocess.run([PYTHON, "manage.py", "shell", "-v0", "-c", seed], cwd=ROOT, env=env, check=True)


def gateway_env(base_env: dict[str, str], worker_class: str, workers: int, threads: int) -> dict[str, str]:
    """Return the environment that runs the shared gunicorn config with ``worker_class``."""
    env = {**base_env, "GATEWAY_WORKER_CLASS": worker_class, "WEB_CONCURRENCY": str(workers)}
    env.pop("GUNICORN_CMD_ARGS", None)
    if worker_class == "gthread":
        env["GUNICORN_CMD_ARGS"] = f"--threads {threads}"
    return env


def describe(worker_class: str, workers: int, threads: int) -> str:
    """Name a gunicorn configuration for the table, e.g. ``gthread 2x16``."""
    if worker_class == "gthread":
        return f"gthread {workers}x{threads}"
    return f"{worker_class} {workers} workers"


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages: the machine is shared."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--worker-classes",
        default=",".join(WORKER_CLASSES),
        help="comma-separated gunicorn worker classes (default gevent,gthread,sync)",
    )
    parser.add_argument("--concurrency", type=int, default=200, help="slow requests sent at once (default 200)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds the slow upstream waits (default 1)")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout in seconds (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=16, help="threads per gthread worker (default 16)")
    parser.add_argument("--fast-requests", type=int, default=20, help="fast-route probes per round (default 20)")
    args = parser.parse_args()
    worker_classes = [name.strip() for name in args.worker_classes.split(",") if name.strip()]

    work = Path(tempfile.mkdtemp(prefix="gateway-concurrency-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_SETTINGS_MODULE")}
    base_env.update(
        SECRET_KEY="bench-only-not-a-secret",  # noqa: S106 - a throwaway benchmark database
        GATEWAY_IGNORE_DOTENV="1",
        ALLOWED_HOSTS="*",
        DATABASE_URL=f"sqlite:///{work}/bench.sqlite3",
        PYTHONPATH=str(ROOT),
    )
    slow_port, fast_port = free_port(), free_port()
    slow_upstream, fast_upstream = f"http://127.0.0.1:{slow_port}", f"http://127.0.0.1:{fast_port}"
    processes: list[Process] = []

    def run_round(slow_url: str, fast_url: str) -> Round:
        return asyncio.run(measure_round(slow_url, fast_url, args.concurrency, args.fast_requests, args.timeout))

    print(
        f"{args.concurrency} concurrent GETs to a {args.delay:g} s upstream, client timeout {args.timeout:g} s; "
        f"up to {args.fast_requests} sequential GETs to a fast route meanwhile; {os.cpu_count()} CPUs",
        flush=True,
    )
    results: dict[str, tuple[Round, str]] = {}
    try:
        processes.append(
            start("upstream-slow", [PYTHON, "bench/upstream.py", str(slow_port), str(args.delay)], base_env, work)
        )
        processes.append(start_upstream(fast_port, base_env, work))
        wait_ready(fast_upstream + "/")
        wait_listening(slow_port)  # its answers take longer than wait_ready's 1 s timeout
        seed_routes(base_env, slow_upstream, fast_upstream)

        before = load_average()
        results["upstream direct"] = (run_round(slow_upstream + "/x", fast_upstream + "/x"), before)
        for worker_class in worker_classes:
            name = describe(worker_class, args.workers, args.threads)
            port = free_port()
            env = gateway_env(base_env, worker_class, args.workers, args.threads)
            cmd = gunicorn_cmd("gateway_project.wsgi:application", port)
            gateway = start(f"gateway-{worker_class}", cmd, env, work)
            processes.append(gateway)
            gateway_url = f"http://127.0.0.1:{port}"
            try:
                wait_ready(gateway_url + "/api/v1/fast/ping")
                # Warm-up: every worker loads its snapshot and opens its upstream pools.
                for _ in range(4 * args.workers):
                    asyncio.run(timed_get(gateway_url + "/api/v1/fast/ping", args.timeout))
                asyncio.run(timed_get(gateway_url + "/api/v1/slow/ping", args.timeout))
                time.sleep(1.0)  # let the warm-up and startup settle before measuring
                before = load_average()
                results[name] = (
                    run_round(gateway_url + "/api/v1/slow/items", gateway_url + "/api/v1/fast/items"),
                    before,
                )
                print(f"  {name}: done (load average before: {before})", flush=True)
            finally:
                gateway.stop()
                processes.remove(gateway)
    finally:
        for process in reversed(processes):
            process.stop()

    print(
        f"\n{'':18} {'ok':>5} {'errors':>6} {'p50':>7} {'p99':>7} {'max':>7} {'wall':>7}"
        f"   {'fast ok':>7} {'fast p50':>8} {'fast max':>8}   load average before"
    )
    for name, (result, load) in results.items():
        slow_errors, fast_errors = errors(result.slow), errors(result.fast)
        slow_ok = len(result.slow) - slow_errors.total()
        fast_ok = len(result.fast) - fast_errors.total()
        print(
            f"{name:18} {slow_ok:5d} {slow_errors.total():6d} {seconds(percentile(result.slow, 50)):>7} "
            f"{seconds(percentile(result.slow, 99)):>7} {seconds(percentile(result.slow, 100)):>7} "
            f"{result.wall_s:5.2f} s   {fast_ok:3d}/{len(result.fast):<3d} "
            f"{millis(percentile(result.fast, 50)):>8} {millis(percentile(result.fast, 100)):>8}   {load}"
        )
    for name, (result, _) in results.items():
        for route, failures in (("slow", errors(result.slow)), ("fast", errors(result.fast))):
            if failures:
                reasons = ", ".join(f"{count} {reason}" for reason, count in failures.most_common())
                print(f"{name} {route} route errors: {reasons}")
    print(f"\ntarget: all {args.concurrency} succeed, p99 <= 1.5 s, the fast route answers meanwhile")
    print(f"logs in {work}")


if __name__ == "__main__":
    main()
