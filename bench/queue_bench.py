"""Measure queue routes: accepted (202, broker-confirmed) requests per second through a live gateway.

Starts the gateway with the shared gunicorn config (gevent workers), seeds a public
queue route ``/api/v1/benchq -> queue://analytics``, then POSTs small JSON bodies from
``--clients`` threads for ``--seconds`` and reports accepted/s and client latency.
Every request writes a status row and waits for the broker's confirm, so the figure
depends on the broker and the database. Messages and rows it created are removed at
the end (nothing is left queued for a worker).

    .venv/bin/python bench/queue_bench.py [--seconds 10] [--clients 16] [--workers 1]

Uses ``DATABASE_URL`` and ``CELERY_BROKER_URL`` when set (e.g. PostgreSQL + RabbitMQ),
else a throwaway SQLite file and the filesystem broker in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _seed() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from access.models import Application, EndpointWhitelist
    from routing.models import ServiceConfig

    ServiceConfig.objects.filter(service_name="benchq").delete()
    Application.objects.filter(name="benchq-public").delete()
    service = ServiceConfig(service_name="benchq", default_url="queue://analytics")
    service.full_clean()
    service.save()
    public = Application.objects.create(name="benchq-public")
    EndpointWhitelist.objects.create(application=public, endpoint_path="/api/v1/benchq/*", is_public=True)


def _cleanup(task_ids: list[str]) -> None:
    from django.conf import settings
    from kombu import Connection

    from access.models import Application
    from queues import topology
    from queues.models import TaskStatus
    from routing.models import ServiceConfig

    for start in range(0, len(task_ids), 500):
        TaskStatus.objects.filter(pk__in=task_ids[start : start + 500]).delete()
    ServiceConfig.objects.filter(service_name="benchq").delete()
    Application.objects.filter(name="benchq-public").delete()
    with Connection(settings.CELERY_BROKER_URL, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS) as conn:
        topology.work_queue("analytics")(conn.default_channel).purge()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers (WEB_CONCURRENCY)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}")
    os.environ.setdefault("CELERY_BROKER_URL", "filesystem://")
    os.environ.setdefault("GATEWAY_BROKER_DIR", str(workdir / "broker"))
    os.environ.setdefault("SECRET_KEY", "queue-bench-throwaway-secret")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    os.environ["GATEWAY_IGNORE_DOTENV"] = "1"
    _seed()

    port = _free_port()
    log_path = workdir / "gateway.log"
    env = dict(os.environ, WEB_CONCURRENCY=str(args.workers), ALLOWED_HOSTS="*", GATEWAY_LOG_LEVEL="WARNING")
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    with log_path.open("ab") as log:
        config = str(ROOT / "gateway_project" / "gunicorn.conf.py")
        gateway = subprocess.Popen(
            [gunicorn, "-c", config, "-b", f"127.0.0.1:{port}", "gateway_project.wsgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/api/v1/benchq/events"
    body = b'{"event": "bench", "properties": {"n": 1}}'
    headers = {"Content-Type": "application/json"}
    task_ids: list[str] = []
    latencies_ms: list[float] = []
    failures: dict[int, int] = {}
    lock = threading.Lock()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = requests.post(url, data=body, headers=headers, timeout=5)
                if response.status_code == 202:
                    task_ids.append(response.json()["task_id"])
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"gateway did not start:\n{log_path.read_text()}")
            time.sleep(0.2)

        def client(stop_at: float) -> None:
            session = requests.Session()
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                response = session.post(url, data=body, headers=headers, timeout=10)
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    if response.status_code == 202:
                        task_ids.append(response.json()["task_id"])
                        latencies_ms.append(elapsed)
                    else:
                        failures[response.status_code] = failures.get(response.status_code, 0) + 1

        started = time.monotonic()
        stop_at = started + args.seconds
        threads = [threading.Thread(target=client, args=(stop_at,)) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed_s = time.monotonic() - started
        latencies_ms.sort()
        p99 = latencies_ms[int(len(latencies_ms) * 0.99) - 1] if latencies_ms else float("nan")
        broker = os.environ["CELERY_BROKER_URL"].split("://", 1)[0]
        database = os.environ["DATABASE_URL"].split("://", 1)[0]
        print(
            f"queue route: {len(latencies_ms) / elapsed_s:.0f} accepted requests/s "
            f"({len(latencies_ms)} in {elapsed_s:.1f} s, {args.clients} clients, {args.workers} gunicorn worker(s), "
            f"broker {broker}, database {database}); latency median "
            f"{statistics.median(latencies_ms):.1f} ms, p99 {p99:.1f} ms; non-202: {failures or 'none'}"
        )
    finally:
        gateway.terminate()
        gateway.wait(15)
        _cleanup(task_ids)


if __name__ == "__main__":
    main()
