"""Benchmark: the gateway against its upstream direct and two reference proxies, in one run.

    .venv/bin/python bench/run.py [--duration 10] [--connections 32] [--workers 2] [--rounds 3]

Starts a fast upstream (nginx when installed, else bench/upstream.py), the gateway
(gunicorn, the shared config: gevent workers) on a fresh SQLite config with a public
route whose entry has a rate limit (every pipeline step does its work), a keyed route
(an API key) and a bearer-token route (an RS256 JWT of a JWKS issuer, bench/bearer.py)
beside it, the stack ceiling (bench/ceiling.py), and the two
references under the same gunicorn settings: a bare Django view forwarding with a
tuned ``requests`` Session, and django-revproxy's ProxyView (bench/requirements.txt;
skipped if it cannot be installed). Loads each with ``wrk`` (else ``hey``, else the
Python generator in bench/loadgen.py) and prints requests/s, p50/p99 latency and the
ratios. The targets take turns, round after round, and each figure is the median over
rounds: a load that comes and goes on a shared machine then weighs on every target
alike instead of on whichever ran at the wrong moment. Run it when the machine is quiet.
The tracing rows (bench/tracing_targets.py) run the same gateway with tracing on at
100 % and 1 % (``--no-tracing`` skips them; ``--baseline REV`` adds an older commit's gateway).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bearer, tracing_targets  # noqa: E402 - after the path setup
from bench.loadgen import LoadResult, run_load  # noqa: E402

PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()


def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start(name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> Process:
    log = (log_dir / f"{name}.log").open("wb")
    return Process(name, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))


def start_upstream(port: int, env: dict[str, str], log_dir: Path) -> Process:
    nginx = shutil.which("nginx")
    if nginx:
        conf = log_dir / "nginx.conf"
        conf.write_text(
            f"daemon off; worker_processes 1; pid {log_dir}/nginx.pid; error_log {log_dir}/nginx-error.log;\n"
            "events { worker_connections 4096; }\n"
            f"http {{ access_log off; keepalive_requests 1000000; server {{ listen 127.0.0.1:{port};\n"
            ' location / { default_type application/json; return 200 \'{"ok":true,"service":"bench"}\'; } } }\n'
        )
        return start("upstream-nginx", [nginx, "-c", str(conf)], env, log_dir)
    return start("upstream-python", [PYTHON, "bench/upstream.py", str(port)], env, log_dir)


def gunicorn_cmd(app: str, port: int) -> list[str]:
    return [GUNICORN, "-c", "gateway_project/gunicorn.conf.py", "-b", f"127.0.0.1:{port}", app]


def seed_gateway(env: dict[str, str], upstream_url: str) -> str:
    """Seed the public route and the keyed one; return the keyed route's API key."""
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    seed = f"""
from access.models import Application, EndpointWhitelist
from access.services import api_key_create
from routing.models import ServiceConfig, ServiceVersion
service = ServiceConfig(service_name="bench", default_url={upstream_url!r})
service.full_clean(); service.save()
ServiceVersion(service=service, version="v1", url={upstream_url!r}, weight=100).save()
app = Application(name="bench-public"); app.full_clean(); app.save()
EndpointWhitelist(application=app, endpoint_path="/api/v1/bench/*", is_public=True, rate_limit=1_000_000_000).save()
# The keyed route: a key (remembered after its first check), a whitelist entry with a
# rate limit (Redis when REDIS_URL is set), two weighted versions to choose between.
keyed = ServiceConfig(service_name="bench-keyed", default_url={upstream_url!r})
keyed.full_clean(); keyed.save()
for name in ("v1", "v2"):
    ServiceVersion(service=keyed, version=name, url={upstream_url!r}, weight=50).save()
caller = Application(name="bench-keyed"); caller.full_clean(); caller.save()
EndpointWhitelist(application=caller, endpoint_path="/api/v1/bench-keyed/*", rate_limit=1_000_000_000).save()
print(api_key_create(application=caller, name="bench")[1])
"""
    out = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", seed], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


KEYED = "gateway keyed"
BEARER = "gateway bearer (RS256)"
CEILING = "stack ceiling"


def worker_cpu_s(process: Process) -> float:
    """Return the CPU seconds (user + system) the gunicorn workers of ``process`` have used."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pid = process.popen.pid
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):  # a worker that just exited
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def ensure_revproxy(env: dict[str, str]) -> bool:
    site = ROOT / "var" / "bench-site"
    if (site / "revproxy").is_dir():
        return True
    result = subprocess.run(
        [PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), "-r", "bench/requirements.txt"],
        cwd=ROOT,
        env=env,
        check=False,
    )
    return result.returncode == 0


_WRK_LATENCY = re.compile(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def load(url: str, connections: int, duration_s: float, headers: Mapping[str, str] | None = None) -> LoadResult:
    """Run the best available load generator against ``url``, sending ``headers`` with every request."""
    wrk = shutil.which("wrk")
    if wrk:
        threads = min(2, connections)
        header_args = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
        out = subprocess.run(
            [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s:.0f}s", "--latency", *header_args, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
        latency = {p: float(v) * scale[u] for p, v, u in _WRK_LATENCY.findall(out)}
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return LoadResult(
            rps, latency.get("50", 0.0), latency.get("99", 0.0), int(errors_match.group(1)) if errors_match else 0
        )
    return run_load(url, connections, duration_s, headers)


def median_result(runs: list[LoadResult]) -> LoadResult:
    """Return the per-field median of ``runs`` (each figure on its own)."""
    return LoadResult(
        statistics.median(run.requests_per_s for run in runs),
        statistics.median(run.p50_ms for run in runs),
        statistics.median(run.p99_ms for run in runs),
        sum(run.errors for run in runs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for every Django server (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of turns; figures are medians (default 3)")
    parser.add_argument("--no-tracing", action="store_true", help="skip the tracing rows (100 %% and 1 %%)")
    parser.add_argument("--baseline", metavar="REV", help="also run the gateway of commit REV (git archive)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_SETTINGS_MODULE")}
    base_env.update(
        SECRET_KEY="bench-only-not-a-secret",  # noqa: S106 - a throwaway benchmark database
        GATEWAY_IGNORE_DOTENV="1",
        ALLOWED_HOSTS="*",
        WEB_CONCURRENCY=str(args.workers),
        DATABASE_URL=f"sqlite:///{work}/bench.sqlite3",
        PYTHONPATH=str(ROOT),
    )
    upstream_port, gateway_port, reference_port = free_port(), free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    processes: list[Process] = []
    try:
        processes.append(start_upstream(upstream_port, base_env, work))
        wait_ready(upstream_url + "/")
        api_key = seed_gateway(base_env, upstream_url)
        jwks_server = bearer.start_jwks_server(free_port())
        bearer.seed_bearer(PYTHON, ROOT, base_env, f"http://127.0.0.1:{jwks_server.server_address[1]}/jwks")
        bearer_headers = {"Authorization": f"Bearer {bearer.bearer_token()}"}
        gateway_process = start(
            "gateway", gunicorn_cmd("gateway_project.wsgi:application", gateway_port), base_env, work
        )
        processes.append(gateway_process)
        ceiling_port = free_port()
        ceiling_env = {**base_env, "BENCH_UPSTREAM": upstream_url}
        ceiling_process = start("ceiling", gunicorn_cmd("bench.ceiling:application", ceiling_port), ceiling_env, work)
        processes.append(ceiling_process)
        traced: dict[str, tuple[int, Process]] = {}  # tracing row -> port, gunicorn
        if not args.no_tracing:
            sink_port = free_port()
            processes.append(start("otlp-sink", [PYTHON, "bench/otlp_sink.py", str(sink_port)], base_env, work))
            for name, ratio in ((tracing_targets.TRACING_ALL, 1.0), (tracing_targets.TRACING_ONE, 0.01)):
                port = free_port()
                env = {**base_env, **tracing_targets.tracing_env(f"http://127.0.0.1:{sink_port}", ratio)}
                traced[name] = (port, start(name, gunicorn_cmd("gateway_project.wsgi:application", port), env, work))
                processes.append(traced[name][1])
        if args.baseline:
            baseline_dir = tracing_targets.extract_baseline(ROOT, args.baseline, work)
            port = free_port()
            cmd = gunicorn_cmd("gateway_project.wsgi:application", port)
            log = (work / "baseline.log").open("wb")
            env = {**base_env, "PYTHONPATH": str(baseline_dir)}
            popen = subprocess.Popen(cmd, cwd=baseline_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
            traced[tracing_targets.BASELINE] = (port, Process("baseline", popen))
            processes.append(traced[tracing_targets.BASELINE][1])
        has_revproxy = ensure_revproxy(base_env)
        reference_env = {
            **base_env,
            "DJANGO_SETTINGS_MODULE": "bench.reference_settings",
            "BENCH_UPSTREAM": upstream_url,
        }
        reference_process = start(
            "reference", gunicorn_cmd("bench.reference_wsgi:application", reference_port), reference_env, work
        )
        processes.append(reference_process)
        gateway_url = f"http://127.0.0.1:{gateway_port}/api/v1/bench/items?page=1"
        reference_url = f"http://127.0.0.1:{reference_port}/api/v1/bench/items?page=1"
        revproxy_url = f"http://127.0.0.1:{reference_port}/revproxy/items?page=1"
        for url in (gateway_url, reference_url):
            wait_ready(url)
        if requests.get(gateway_url, timeout=5).status_code != 200:
            raise RuntimeError("the gateway does not serve the bench route")

        keyed_url = f"http://127.0.0.1:{gateway_port}/api/v1/bench-keyed/items?page=1"
        ceiling_url = f"http://127.0.0.1:{ceiling_port}/api/v1/bench/items?page=1"
        wait_ready(ceiling_url)
        if requests.get(keyed_url, headers={"X-API-Key": api_key}, timeout=5).status_code != 200:
            raise RuntimeError("the gateway does not serve the keyed bench route")
        if requests.get(keyed_url, headers=bearer_headers, timeout=5).status_code != 200:
            raise RuntimeError("the gateway does not serve the bearer-token bench route")
        targets = {
            "upstream direct": upstream_url + "/api/v1/bench/items?page=1",
            CEILING: ceiling_url,
            "gateway (all steps)": gateway_url,
            KEYED: keyed_url,
            BEARER: keyed_url,
            "django + requests view": reference_url,
        }
        headers_of = {KEYED: {"X-API-Key": api_key}, BEARER: bearer_headers}
        cpu_of = {
            CEILING: ceiling_process,
            "gateway (all steps)": gateway_process,
            KEYED: gateway_process,
            BEARER: gateway_process,
            "django + requests view": reference_process,
            "django-revproxy ProxyView": reference_process,
        }
        for name, (port, process) in traced.items():
            targets[name] = f"http://127.0.0.1:{port}/api/v1/bench/items?page=1"
            cpu_of[name] = process
            wait_ready(targets[name])
        if has_revproxy and requests.get(revproxy_url, timeout=5).status_code == 200:
            targets["django-revproxy ProxyView"] = revproxy_url
        generator = "wrk" if shutil.which("wrk") else "python loadgen"
        print(
            f"load generator: {generator}; {args.connections} connections, {args.duration:.0f} s each, "
            f"medians of {args.rounds} rounds; "
            f"gunicorn {args.workers} workers ({os.environ.get('GATEWAY_WORKER_CLASS', 'gevent')}); "
            f"{os.cpu_count()} CPUs"
        )
        for name, url in targets.items():  # warm-up: pools, first key checks, page cache
            load(url, 4, 2, headers_of.get(name))
        rounds: dict[str, list[LoadResult]] = {name: [] for name in targets}
        cpu_rounds: dict[str, list[float]] = {name: [] for name in targets if name in cpu_of}
        single_rounds: dict[str, list[LoadResult]] = {
            name: [] for name in ("upstream direct", CEILING, "gateway (all steps)", KEYED)
        }
        loads: list[str] = []
        for _ in range(args.rounds):
            loads.append("/".join(f"{x:.1f}" for x in os.getloadavg()))
            for name, url in targets.items():
                cpu_before = worker_cpu_s(cpu_of[name]) if name in cpu_of else 0.0
                result = load(url, args.connections, args.duration, headers_of.get(name))
                rounds[name].append(result)
                if name in cpu_of:
                    used_s = worker_cpu_s(cpu_of[name]) - cpu_before
                    cpu_rounds[name].append(used_s / (result.requests_per_s * args.duration) * 1e6)
            for name in single_rounds:
                single_rounds[name].append(load(targets[name], 1, args.duration, headers_of.get(name)))
        results = {name: median_result(runs) for name, runs in rounds.items()}
        cpu_us = {name: statistics.median(values) for name, values in cpu_rounds.items()}
        single = {name: median_result(runs) for name, runs in single_rounds.items()}
    finally:
        for process in reversed(processes):
            process.stop()

    print(f"load average at the start of each round: {', '.join(loads)}")
    print(f"\n{'target':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'CPU us/req':>11}")
    for name, result in results.items():
        cpu = f"{cpu_us[name]:11.0f}" if name in cpu_us else f"{'':11}"
        print(
            f"{name:28} {result.requests_per_s:9.0f} {result.p50_ms:8.2f} {result.p99_ms:8.2f} {result.errors:7d} {cpu}"
        )
    gateway = results["gateway (all steps)"]
    reference = results["django + requests view"]
    print("\nratios (same run):")
    print(f"  gateway / django+requests view: {gateway.requests_per_s / reference.requests_per_s:.2f}x (target >= 1.0)")
    if "django-revproxy ProxyView" in results:
        revproxy = results["django-revproxy ProxyView"]
        print(
            f"  gateway / django-revproxy:      {gateway.requests_per_s / revproxy.requests_per_s:.2f}x (target >= 1.1)"
        )
    print(
        f"  gateway / upstream direct:      {gateway.requests_per_s / results['upstream direct'].requests_per_s:.3f}x"
    )
    keyed, ceiling = results[KEYED], results[CEILING]
    print(f"  keyed / public:                 {keyed.requests_per_s / gateway.requests_per_s:.2f}x (target >= 0.9)")
    bearer_rps = results[BEARER].requests_per_s
    print(f"  bearer / public:                {bearer_rps / gateway.requests_per_s:.2f}x (target >= 0.9)")
    print(f"  public / stack ceiling:         {gateway.requests_per_s / ceiling.requests_per_s:.2f}x (target >= 0.7)")
    print(f"  keyed / stack ceiling:          {keyed.requests_per_s / ceiling.requests_per_s:.2f}x (target >= 0.65)")
    tracing_targets.print_ratios(results, args.baseline)
    direct1, gateway1 = single["upstream direct"], single["gateway (all steps)"]
    print("\n1 connection latency:")
    print(f"  upstream direct p50 {direct1.p50_ms:.2f} ms, p99 {direct1.p99_ms:.2f} ms")
    print(f"  gateway         p50 {gateway1.p50_ms:.2f} ms, p99 {gateway1.p99_ms:.2f} ms")
    print(
        f"  added by the gateway: p50 {gateway1.p50_ms - direct1.p50_ms:.2f} ms (target <= 1.0), "
        f"p99 {gateway1.p99_ms - direct1.p99_ms:.2f} ms (target <= 3)"
    )
    keyed1, ceiling1 = single[KEYED], single[CEILING]
    print(f"  stack ceiling   p50 {ceiling1.p50_ms:.2f} ms, p99 {ceiling1.p99_ms:.2f} ms")
    print(f"  gateway keyed   p50 {keyed1.p50_ms:.2f} ms, p99 {keyed1.p99_ms:.2f} ms")
    print(f"  keyed over public: p50 {keyed1.p50_ms - gateway1.p50_ms:+.2f} ms (target <= 0.15)")
    print(f"\nlogs in {work}")


if __name__ == "__main__":
    main()
