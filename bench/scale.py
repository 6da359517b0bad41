"""Scale benchmark: keyed throughput, compile time, worker RSS and propagation at three config sizes.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gateway REDIS_URL=redis://127.0.0.1:6379/4 \\
        .venv/bin/python bench/scale.py [--sizes 10,1000,10000] [--duration 8] [--rounds 3] [--changes 100]

For each size (services; API keys = 10 x services; 50 applications, each service with 2
weighted versions and whitelist entries for 10 % of the applications) it creates a
PostgreSQL database ``<DATABASE_URL's name>_scale_<services>``, seeds it with bulk
inserts, and starts two gateway nodes (gunicorn, the shared config, 2 gevent workers
each) on it, all sizes side by side. Then, in one run:

- compile time: a whole compile and the application of one changed row (median of 3,
  in a separate process, PostgreSQL ``REPEATABLE READ`` as the watcher does);
- keyed throughput and p50/p99 (wrk, 32 connections, a remembered key, a whitelist
  entry with a Redis rate limit, a weighted version choice): the sizes take turns,
  round after round, and each figure is the median of the rounds;
- worker RSS after loading, and after ``--changes`` one-field admin changes;
- propagation: those changes are made one after another by a separate Django process
  (a version's weight, an entry's rate limit, a key's expiry, in turn), each committed
  then timed until every worker of both nodes logged the swap to its version (the
  propagation test's method); meanwhile a probe sends keyed requests to both nodes and
  its latency is reported.

The seeded keys' hashes are argon2id with *cheap* parameters (t=1, 8 KiB) so that
100,000 of them take seconds to make: bench data only, never how a key is hashed.
The machine's load average is printed beside every figure. Needs PostgreSQL, Redis,
nginx or bench/upstream.py, and wrk (else the slower Python load generator).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402 - after the path setup
    PYTHON,
    Process,
    free_port,
    gunicorn_cmd,
    load,
    median_result,
    start,
    start_upstream,
    wait_ready,
    worker_cpu_s,
)

APPLICATIONS = 50
ENTRY_SHARE = 10  # each service is whitelisted for every 10th application (10 %)
KEYS_PER_SERVICE = 10
WORKERS = 2
NODES = 2


# --- Seeding and changing (run in a child process, one database each) --------------------------


def bench_service(services: int) -> int:
    """The keyed route's service: one in the middle, so its entry is not the first its application tries."""
    return services // 2


def seed(services: int, upstream_url: str) -> dict[str, object]:
    """Fill the empty, migrated database with ``services`` services and 10 keys per service."""
    import secrets

    from argon2 import PasswordHasher
    from django.db import transaction

    from access.models import ApiKey, Application, EndpointWhitelist
    from routing import reload
    from routing.models import ServiceConfig, ServiceVersion

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # bench keys only, see the docstring
    keyed = bench_service(services)
    started = time.perf_counter()
    with transaction.atomic():
        apps = Application.objects.bulk_create(Application(name=f"app-{n:02d}") for n in range(APPLICATIONS))
        rows = ServiceConfig.objects.bulk_create(
            ServiceConfig(service_name=f"svc-{n:05d}", route_prefix=f"/api/v1/svc-{n:05d}", default_url=upstream_url)
            for n in range(services)
        )
        ServiceVersion.objects.bulk_create(
            (
                ServiceVersion(service=row, version=name, url=upstream_url, weight=50)
                for row in rows
                for name in ("v1", "v2")
            ),
            batch_size=5000,
        )
        EndpointWhitelist.objects.bulk_create(
            (
                EndpointWhitelist(
                    application=apps[(n + k * ENTRY_SHARE) % APPLICATIONS],
                    endpoint_path=f"/api/v1/svc-{n:05d}/*",
                    rate_limit=1_000_000_000 if n == keyed and k == 0 else None,  # the keyed route counts in Redis
                )
                for n in range(services)
                for k in range(APPLICATIONS // ENTRY_SHARE)
            ),
            batch_size=5000,
        )
        secret = secrets.token_urlsafe(32)
        bench_key = ApiKey(
            application=apps[keyed % APPLICATIONS],
            name="bench",
            key_prefix="gk_000000000000",
            api_key_hash=cheap.hash(secret),
        )
        ApiKey.objects.bulk_create(
            [bench_key]
            + [
                ApiKey(
                    application=apps[n % APPLICATIONS],
                    name=f"key-{n}",
                    key_prefix=f"gk_{n:012x}",
                    api_key_hash=cheap.hash(secrets.token_urlsafe(32)),
                )
                for n in range(1, services * KEYS_PER_SERVICE)
            ],
            batch_size=5000,
        )
    seeded_s = time.perf_counter() - started
    reload.reload_now()  # bulk inserts send no signals
    return {"seed_s": seeded_s, "key": f"gk_000000000000.{secret}"}


def compile_times() -> dict[str, float]:
    """Time a whole compile and the application of one changed row (medians of 3)."""
    from django.db import connection

    from access.models import EndpointWhitelist
    from gateway_core import snapshot
    from routing import reload

    full = []
    for _ in range(3):
        started = time.perf_counter()
        base = reload._compile_consistent(None)  # the watcher's own compile, timed
        full.append(time.perf_counter() - started)
    snapshot.install(base)
    entry = EndpointWhitelist.objects.exclude(rate_limit=1_000_000_000).order_by("id").first()
    entry.rate_limit = 600 if entry.rate_limit is None else None
    entry.save()  # no watcher in this process: reload_now refreshes it in place
    applied = []
    for _ in range(3):
        started = time.perf_counter()
        reload._compile_consistent(base)  # as the watcher applies a change
        applied.append(time.perf_counter() - started)
    times = {"full_compile_s": statistics.median(full), "apply_one_change_s": statistics.median(applied)}
    try:
        from admin_panel.revisions import revision_document
    except ImportError:  # no config history in this tree
        return times
    started = time.perf_counter()
    revision_document()
    times["revision_document_s"] = time.perf_counter() - started
    connection.close()
    return times


def change_loop(count: int, interval_s: float) -> None:
    """Make ``count`` one-field admin changes, printing ``version committed_at`` for each."""
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone

    from access.models import ApiKey, EndpointWhitelist
    from gateway_core.changes import config_committed
    from routing import reload
    from routing.models import ServiceVersion

    # The admin's config history writes the whole config document per change, after the
    # notification went out; it is timed on its own at seeding (revision_document_s) and
    # left out here so a hundred changes at 10,000 services do not take an hour.
    for receiver in list(config_committed.receivers):
        config_committed.disconnect(dispatch_uid=receiver[0][0])
    rng = random.Random(7)
    services = ServiceVersion.objects.count() // 2
    for n in range(count):
        target = rng.randrange(1, services) if services > 1 else 0
        committed: list[float] = []
        with transaction.atomic():
            transaction.on_commit(lambda done=committed: done.append(time.time()))
            kind = n % 3
            if kind == 0:
                row = ServiceVersion.objects.get(service__service_name=f"svc-{target:05d}", version="v2")
                row.weight = 51 if row.weight == 50 else 50
            elif kind == 1:
                entries = EndpointWhitelist.objects.filter(endpoint_path=f"/api/v1/svc-{target:05d}/*")
                row = entries.exclude(rate_limit=1_000_000_000).order_by("id").last()
                row.rate_limit = 600 if row.rate_limit is None else None
            else:
                row = ApiKey.objects.get(key_prefix=f"gk_{target * KEYS_PER_SERVICE:012x}")
                row.expires_at = timezone.now() + timedelta(days=30 + n)
            row.save()
        print(reload.revision_read(), committed[0], flush=True)
        time.sleep(interval_s)


def child_main(args: argparse.Namespace) -> None:
    import django

    django.setup()
    if args.child == "seed":
        out: dict[str, object] = seed(args.services, args.upstream)
        out.update(compile_times())
        print(json.dumps(out), flush=True)
    elif args.child == "full":
        from routing import reload

        started = time.time()
        print(reload.reload_now(), started, flush=True)  # names no rows: every worker compiles everything
    else:
        change_loop(args.changes, args.interval)


# --- The driver ------------------------------------------------------------------------------


@dataclass
class Stack:
    """One size: its database, seed figures and two gateway nodes."""

    services: int
    database_url: str
    env: dict[str, str]
    nodes: list[Process] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    seeded: dict[str, object] = field(default_factory=dict)
    rss_after_first: list[float] = field(default_factory=list)

    @property
    def key(self) -> str:
        return str(self.seeded["key"])

    def urls(self) -> list[str]:
        path = f"/api/v1/svc-{bench_service(self.services):05d}/items?page=1"
        return [f"http://127.0.0.1:{port}{path}" for port in self.ports]

    def worker_pids(self) -> list[int]:
        pids = []
        for node in self.nodes:
            children = Path(f"/proc/{node.popen.pid}/task/{node.popen.pid}/children").read_text().split()
            pids += [int(pid) for pid in children]
        return pids

    def rss_mib(self) -> list[float]:
        out = []
        for pid in self.worker_pids():
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            out.extend(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmRSS:"))
        return out

    def swaps(self) -> dict[int, list[tuple[int, float]]]:
        """Per worker pid: (config version, when) of each logged swap."""
        out: dict[int, list[tuple[int, float]]] = {}
        for log in self.logs:
            for line in log.read_text(errors="replace").splitlines():
                if '"config snapshot loaded"' not in line:
                    continue
                record = json.loads(line)
                when = datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()
                out.setdefault(record["pid"], []).append((int(record["config_version"]), when))
        return out


def database_url_for(base: str, services: int) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}_scale_{services}"))


def recreate_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def child(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, str(Path(__file__).resolve()), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )


def load_avg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


class Probe:
    """Keyed requests to every node, one after another, 20 ms apart; records each latency."""

    def __init__(self, urls: list[str], key: str) -> None:
        self.urls, self.key = urls, key
        self.latencies_ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        n = 0
        while not self._stop.is_set():
            url = self.urls[n % len(self.urls)]
            n += 1
            started = time.perf_counter()
            try:
                ok = session.get(url, headers={"X-API-Key": self.key}, timeout=5).status_code == 200
            except requests.RequestException:
                ok = False
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            self.failures += not ok
            self._stop.wait(0.02)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def change_leg(stack: Stack, changes: int, interval_s: float) -> tuple[list[float], Probe]:
    """Make ``changes`` changes; return each one's time until every worker swapped, and the probe's latencies."""
    pids = stack.worker_pids()
    with Probe(stack.urls(), stack.key) as probe:
        proc = child(stack.env, "--child", "change", "--changes", str(changes), "--interval", str(interval_s))
        out, _ = proc.communicate(timeout=changes * (interval_s + 5) + 60)
        time.sleep(2.0)  # the last change's swaps
    committed = [(int(v), float(t)) for v, t in (line.split() for line in out.split("\n") if line.strip())]
    swaps = stack.swaps()
    worst = []
    for version, at in committed:
        per_worker = []
        for pid in pids:
            after = [when for v, when in swaps.get(pid, []) if v >= version]
            per_worker.append(min(after) - at if after else float("inf"))
        worst.append(max(per_worker))
    return worst, probe


def propagate(stack: Stack, changes: int, interval_s: float) -> dict[str, float]:
    """Probe at rest, then make ``changes`` changes (RSS sampled after the first tenth); return the figures."""
    with Probe(stack.urls(), stack.key) as rest:
        time.sleep(8.0)
    first = max(1, changes // 10)
    worst, probe = change_leg(stack, first, interval_s)
    stack.rss_after_first = stack.rss_mib()
    more_worst, more = change_leg(stack, changes - first, interval_s)
    worst += more_worst
    probe.latencies_ms += more.latencies_ms
    probe.failures += more.failures
    return {
        "rest_p50_ms": percentile(rest.latencies_ms, 0.5),
        "rest_p99_ms": percentile(rest.latencies_ms, 0.99),
        "first_changes": first,
        "changes": len(worst),
        "p50_s": percentile(worst, 0.5),
        "p99_s": percentile(worst, 0.99),
        "max_s": max(worst),
        "probe_p50_ms": percentile(probe.latencies_ms, 0.5),
        "probe_p99_ms": percentile(probe.latencies_ms, 0.99),
        "probe_max_ms": max(probe.latencies_ms),
        "probe_requests": len(probe.latencies_ms),
        "probe_failures": probe.failures,
    }


def full_reload(stack: Stack) -> dict[str, float]:
    """Request a reload that names no rows (``gateway_reload``); time every worker's whole compile."""
    pids = stack.worker_pids()
    with Probe(stack.urls(), stack.key) as probe:
        out, _ = child(stack.env, "--child", "full").communicate(timeout=120)
        version, at = int(out.split()[0]), float(out.split()[1])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            swaps = stack.swaps()
            done = [min((w for v, w in swaps.get(pid, []) if v >= version), default=None) for pid in pids]
            if all(d is not None for d in done):
                break
            time.sleep(0.5)
        time.sleep(1.0)
    return {
        "full_s": max((d - at) if d is not None else float("inf") for d in done),
        "probe_p99_ms": percentile(probe.latencies_ms, 0.99),
        "probe_max_ms": max(probe.latencies_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000", help="services per size (default 10,1000,10000)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput measurement (default 8)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds; figures are medians (default 3)")
    parser.add_argument("--changes", type=int, default=100, help="admin changes per size (default 100)")
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between two changes (default 0.3)")
    parser.add_argument("--child", choices=["seed", "change", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--services", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers it started (finally)
    if args.child:
        child_main(args)
        return

    base_url = os.environ.get("DATABASE_URL", "")
    if not base_url.startswith("postgres") or not os.environ.get("REDIS_URL"):
        sys.exit("bench/scale.py needs DATABASE_URL=postgres://... (a server it may create databases on) and REDIS_URL")
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="gateway-scale-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_SETTINGS_MODULE")}
    base_env.update(
        SECRET_KEY="bench-only-not-a-secret",  # noqa: S106 - throwaway benchmark databases
        GATEWAY_IGNORE_DOTENV="1",
        ALLOWED_HOSTS="*",
        WEB_CONCURRENCY=str(WORKERS),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
    )
    upstream_port = free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    processes: list[Process] = []
    stacks: list[Stack] = []
    try:
        processes.append(start_upstream(upstream_port, base_env, work))
        wait_ready(upstream_url + "/")
        for services in sizes:
            url = database_url_for(base_url, services)
            stack = Stack(services, url, {**base_env, "DATABASE_URL": url})
            recreate_database(url)
            subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=stack.env, check=True)
            proc = child(stack.env, "--child", "seed", "--services", str(services), "--upstream", upstream_url)
            out, _ = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"seeding {services} services failed")
            stack.seeded = json.loads(out.strip().splitlines()[-1])
            revision_s = stack.seeded.get("revision_document_s")
            print(
                f"seeded {services} services, {services * KEYS_PER_SERVICE} keys in {stack.seeded['seed_s']:.1f} s; "
                f"full compile {stack.seeded['full_compile_s'] * 1000:.0f} ms, "
                f"one change applied {stack.seeded['apply_one_change_s'] * 1000:.1f} ms"
                + (f", config history document {revision_s * 1000:.0f} ms" if revision_s is not None else "")
                + f" (load {load_avg()})",
                flush=True,
            )
            for n in range(NODES):
                port = free_port()
                log = work / f"gateway-{services}-{n}.log"
                stack.ports.append(port)
                stack.logs.append(log)
                node = start(
                    f"gateway-{services}-{n}", gunicorn_cmd("gateway_project.wsgi:application", port), stack.env, work
                )
                stack.nodes.append(node)
                processes.append(node)
            stacks.append(stack)
        for stack in stacks:
            for url in stack.urls():
                deadline = time.monotonic() + 300
                while True:
                    try:
                        if requests.get(url, headers={"X-API-Key": stack.key}, timeout=30).status_code == 200:
                            break
                    except requests.RequestException:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{url} never served the keyed route")
                    time.sleep(0.5)
            for url in stack.urls():  # warm every worker's key memo and upstream pool
                load(url, 8, 2, headers={"X-API-Key": stack.key})

        rss_loaded = {stack.services: stack.rss_mib() for stack in stacks}
        rounds: dict[int, list] = {stack.services: [] for stack in stacks}
        loads: list[str] = []
        cpu_rounds: dict[int, list[float]] = {stack.services: [] for stack in stacks}
        for _ in range(args.rounds):
            for stack in stacks:
                loads.append(load_avg())
                cpu_before = worker_cpu_s(stack.nodes[0])
                result = load(stack.urls()[0], args.connections, args.duration, headers={"X-API-Key": stack.key})
                rounds[stack.services].append(result)
                used_s = worker_cpu_s(stack.nodes[0]) - cpu_before
                cpu_rounds[stack.services].append(used_s / (result.requests_per_s * args.duration) * 1e6)
        throughput = {services: median_result(runs) for services, runs in rounds.items()}
        cpu_us = {services: statistics.median(values) for services, values in cpu_rounds.items()}
        print(f"throughput rounds done (load averages {', '.join(loads)})", flush=True)

        propagation = {}
        rss_changed = {}
        full: dict[int, dict[str, float]] = {}
        for stack in stacks:
            propagation[stack.services] = propagate(stack, args.changes, args.interval)
            rss_changed[stack.services] = stack.rss_mib()
            full[stack.services] = full_reload(stack)
            print(f"{stack.services} services: {args.changes} changes done (load {load_avg()})", flush=True)
    finally:
        for process in reversed(processes):
            process.stop()

    smallest = throughput[sizes[0]].requests_per_s
    print(
        f"\nkeyed route, wrk {args.connections} connections {args.duration:.0f} s, median of {args.rounds} rounds "
        f"(sizes in turn); {NODES} nodes x {WORKERS} gevent workers per size, PostgreSQL + Redis; "
        f"{os.cpu_count()} CPUs; load average at the end {load_avg()}"
    )
    print(
        f"{'services':>8} {'keys':>7} {'entries':>7} {'req/s':>7} {'vs 1st':>6} {'CPU us':>6} {'p50 ms':>7} "
        f"{'p99 ms':>7} "
        f"{'compile ms':>10} {'apply ms':>8} {'RSS MiB':>13} {'after 10%':>13} {'after chg':>13} "
        f"{'prop p50/p99/max s':>19} {'probe p99/max ms':>17}"
    )
    for services in sizes:
        result, prop = throughput[services], propagation[services]
        seeded = next(s.seeded for s in stacks if s.services == services)
        loaded, changed = rss_loaded[services], rss_changed[services]
        first = next(s.rss_after_first for s in stacks if s.services == services)
        print(
            f"{services:8d} {services * KEYS_PER_SERVICE:7d} {services * APPLICATIONS // ENTRY_SHARE:7d} "
            f"{result.requests_per_s:7.0f} {result.requests_per_s / smallest:6.2f} {cpu_us[services]:6.0f} "
            f"{result.p50_ms:7.2f} "
            f"{result.p99_ms:7.2f} {seeded['full_compile_s'] * 1000:10.0f} {seeded['apply_one_change_s'] * 1000:8.1f} "
            f"{min(loaded):6.0f}-{max(loaded):<6.0f} {min(first):6.0f}-{max(first):<6.0f} "
            f"{min(changed):6.0f}-{max(changed):<6.0f} "
            f"{prop['p50_s']:6.3f}/{prop['p99_s']:.3f}/{prop['max_s']:.3f} "
            f"{prop['probe_p99_ms']:8.1f}/{prop['probe_max_ms']:.0f}"
        )
    for services in sizes:
        prop = propagation[services]
        print(
            f"  {services} services: {prop['changes']:.0f} changes (RSS also after the first "
            f"{prop['first_changes']:.0f}); probe {prop['probe_requests']:.0f} requests during them "
            f"({prop['probe_failures']:.0f} not 200), "
            f"p50 {prop['probe_p50_ms']:.1f} ms (at rest before: p50 {prop['rest_p50_ms']:.1f} ms, "
            f"p99 {prop['rest_p99_ms']:.1f} ms); errors under load "
            f"{throughput[services].errors}; a reload naming no rows (whole compile) reached every worker in "
            f"{full[services]['full_s']:.2f} s, probe p99 {full[services]['probe_p99_ms']:.0f} ms, "
            f"max {full[services]['probe_max_ms']:.0f} ms meanwhile"
        )
    print(f"\nlogs in {work}")


if __name__ == "__main__":
    main()
