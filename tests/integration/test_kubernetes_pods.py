"""The rendered pods run as rendered: read-only root, secrets as files, SIGTERM drains (deploy/kubernetes).

Each process is started from the production overlay's own container command and ConfigMap,
in a mount namespace laid out like its pod (tests/support/kubernetes.py): root filesystem
read-only, ``/tmp`` a fresh tmpfs, the secret files mounted read-only at
``/run/secrets/gateway``, and no other environment. The secret files point at this run's
PostgreSQL, Redis and RabbitMQ.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import servers
from tests.support.backends import requires_postgres, requires_rabbitmq, requires_redis
from tests.support.builders import make_public_app, make_service
from tests.support.kubernetes import (
    PodProcess,
    container_of,
    find,
    render,
    requires_checkout_outside_tmp,
    requires_mount_namespace,
)
from tests.support.servers import port_open
from tests.support.upstream import EchoRequestHandler, EchoUpstream, Received, echo, free_port

pytestmark = [
    requires_postgres,
    requires_redis,
    requires_rabbitmq,
    requires_mount_namespace,
    requires_checkout_outside_tmp,
]

PUBLIC_HOST = {"Host": "api.example.com"}
ADMIN_HOST = {"Host": "admin.example.com"}


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render("production")


@pytest.fixture
def secrets_path(tmp_path: Path) -> Path:
    """Write the gateway-secrets files: this run's servers; the optional ones empty."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    values = {
        "SECRET_KEY": "pod-test-secret-key\n",  # a trailing newline, as `kubectl create secret --from-file` keeps
        "DATABASE_URL": servers.test_database_url(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
        "CELERY_RESULT_BACKEND": "",
        "EMAIL_URL": "",
        "GATEWAY_CALLBACK_SECRET": "",
        "SMS_PROVIDER_URL": "",
        "AI_SERVICE_URL": "",
    }
    for name, value in values.items():
        (folder / name).write_text(value)
        (folder / name).chmod(0o440)
    return folder


@pytest.fixture
def pod(
    production: list[dict[str, Any]], secrets_path: Path, tmp_path: Path, transactional_db: None
) -> Iterator[Callable[..., PodProcess]]:
    """Start a rendered Deployment's container as its pod would; return it, listening when it serves HTTP."""
    config = find(production, "ConfigMap", "gateway-config")["data"]
    started: list[PodProcess] = []

    def start(deployment: str, port: int | None = None) -> PodProcess:
        container = container_of(production, deployment)
        command = [*container["command"], *container.get("args", [])]
        env = dict(config)
        if port is not None:
            # The rendered bind (0.0.0.0:4200 by default, -b 0.0.0.0:4201) on a free loopback port.
            command = [arg.replace("0.0.0.0:4201", f"127.0.0.1:{port}") for arg in command]
            env["GATEWAY_BIND"] = f"127.0.0.1:{port}"
        process = PodProcess(command, env, secrets_path, tmp_path / f"{deployment}.log").start()
        started.append(process)
        if port is not None:
            # The startup probe: gunicorn's master listens at once, its workers answer when booted.
            wait_until(
                lambda: answers(production, deployment, "startupProbe", port) or process.exited() is not None, 60
            )
            assert process.exited() is None, process.log()[-3000:]
        return process

    yield start
    for process in started:  # all at once: each drains on its own
        process.terminate()
    for process in started:
        process.stop()


def wait_until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s")
        time.sleep(0.1)


def probe(production: list[dict[str, Any]], deployment: str, name: str, port: int) -> requests.Response:
    """Send the rendered probe (path and Host header) as the kubelet would."""
    get = container_of(production, deployment)[name]["httpGet"]
    headers = {header["name"]: header["value"] for header in get.get("httpHeaders", [])}
    return requests.get(f"http://127.0.0.1:{port}{get['path']}", headers=headers, timeout=10)


def answers(production: list[dict[str, Any]], deployment: str, name: str, port: int) -> bool:
    """Return True when the probe succeeds (the kubelet counts 200-399 as success)."""
    try:
        return 200 <= probe(production, deployment, name, port).status_code < 400
    except requests.RequestException:
        return False


def test_gateway_admin_and_worker_pods_serve_from_a_read_only_root(
    pod: Callable[..., PodProcess], production: list[dict[str, Any]], echo_upstream: EchoUpstream
) -> None:
    make_service("orders", echo_upstream.url)
    make_service("events", "queue://analytics")
    make_public_app("/api/v1/*")
    gateway_port, admin_port = free_port(), free_port()
    gateway = pod("gateway", gateway_port)
    admin = pod("admin", admin_port)
    worker = pod("worker-analytics")

    for deployment, port in (("gateway", gateway_port), ("admin", admin_port)):
        ready = probe(production, deployment, "readinessProbe", port)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "cache": "ok", "broker": "ok", "snapshot": "ok"}
        assert probe(production, deployment, "livenessProbe", port).json() == {"status": "ok"}

    proxied = requests.get(f"http://127.0.0.1:{gateway_port}/api/v1/orders/7", headers=PUBLIC_HOST, timeout=10)
    assert proxied.status_code == 200, proxied.text
    assert echo_upstream.last.target == "/api/v1/orders/7"
    assert echo_upstream.last.header("X-Forwarded-Host") == "api.example.com"
    # GATEWAY_ADMIN_API_ON_PUBLIC_PORT=false: the admin REST API is on 4201 only.
    assert (
        requests.get(f"http://127.0.0.1:{gateway_port}/admin/cache", headers=PUBLIC_HOST, timeout=10).status_code == 404
    )
    login = requests.get(f"http://127.0.0.1:{admin_port}/admin/login/", headers=ADMIN_HOST, timeout=10)
    # Behind the ingress's TLS (GATEWAY_BEHIND_TLS_PROXY=true) the admin's cookies are Secure.
    assert login.status_code == 200
    assert "csrftoken=" in login.headers["Set-Cookie"] and "Secure" in login.headers["Set-Cookie"]

    queued = requests.post(
        f"http://127.0.0.1:{gateway_port}/api/v1/events", json={"event": "pod-test"}, headers=PUBLIC_HOST, timeout=10
    )
    assert queued.status_code == 202, queued.text
    status_url = f"http://127.0.0.1:{gateway_port}{queued.json()['status_url']}"
    wait_until(lambda: requests.get(status_url, headers=PUBLIC_HOST, timeout=5).json()["status"] == "succeeded", 45)

    for process in (gateway, admin, worker):
        assert process.exited() is None, process.log()[-3000:]
        for trouble in ("Read-only file system", "Permission denied", "Traceback"):
            assert trouble not in process.log(), process.log()[-3000:]


def test_sigterm_lets_in_flight_requests_finish_and_takes_no_new_connection(
    pod: Callable[..., PodProcess], production: list[dict[str, Any]], echo_upstream: EchoUpstream
) -> None:
    """What the kubelet does after preStop: SIGTERM; gunicorn drains within GATEWAY_GRACEFUL_TIMEOUT_S."""
    arrived = threading.Semaphore(0)

    def slow(handler: EchoRequestHandler, received: Received) -> None:
        arrived.release()
        time.sleep(2.0)
        echo(handler, received)

    echo_upstream.set_handler(slow)
    make_service("slow", echo_upstream.url)
    make_public_app("/api/v1/*")
    port = free_port()
    gateway = pod("gateway", port)
    assert probe(production, "gateway", "readinessProbe", port).status_code == 200

    answers: list[int | str] = []

    def call(index: int) -> None:
        try:
            url = f"http://127.0.0.1:{port}/api/v1/slow/{index}"
            answers.append(requests.get(url, headers=PUBLIC_HOST, timeout=20).status_code)
        except requests.RequestException as exc:
            answers.append(type(exc).__name__)

    callers = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for caller in callers:
        caller.start()
    for _ in callers:
        assert arrived.acquire(timeout=10), "the requests did not reach the upstream"
    terminated = time.monotonic()
    gateway.terminate()
    wait_until(lambda: not port_open("127.0.0.1", port), 5)  # the listener closes at once
    for caller in callers:
        caller.join(timeout=20)
    assert answers == [200] * 6
    wait_until(lambda: gateway.exited() is not None, 10)
    graceful_s = int(find(production, "ConfigMap", "gateway-config")["data"]["GATEWAY_GRACEFUL_TIMEOUT_S"])
    assert time.monotonic() - terminated < graceful_s
    assert gateway.exited() == 0, gateway.log()[-3000:]
