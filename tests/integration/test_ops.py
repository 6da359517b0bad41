"""Liveness and readiness of a live gateway, with each dependency up and down (SPEC §8)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

from gateway_project import ops
from tests.support.backends import requires_postgres
from tests.support.builders import make_public_app, make_service
from tests.support.upstream import EchoUpstream, free_port

CHECK_NAMES = {"database", "cache", "broker", "snapshot"}


def closed_port() -> int:
    return free_port()


def readyz(gateway) -> requests.Response:
    return requests.get(gateway.url + "/readyz", timeout=10)


def test_live_gateway_is_ready_when_every_dependency_answers(gateway_server) -> None:
    gateway = gateway_server(workers=2)

    response = readyz(gateway)

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "checks": dict.fromkeys(CHECK_NAMES, "ok")}
    assert response.headers["Cache-Control"].startswith("max-age=0")
    assert requests.get(gateway.url + "/healthz", timeout=5).json() == {"status": "ok"}


def test_database_down_is_named_and_the_process_stays_live(gateway_server) -> None:
    dead_db = f"postgres://postgres@127.0.0.1:{closed_port()}/gw_ops"
    gateway = gateway_server(env={"DATABASE_URL": dead_db})

    started = time.monotonic()
    response = readyz(gateway)
    elapsed_s = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"].startswith("error: ")
    assert body["checks"]["snapshot"].startswith("error: ")  # never loaded: nothing to serve from
    assert body["checks"]["broker"] == "ok"
    assert elapsed_s < ops.READY_TIMEOUT_S + 2
    assert requests.get(gateway.url + "/healthz", timeout=5).status_code == 200


def test_cache_down_is_named(gateway_server) -> None:
    gateway = gateway_server(env={"REDIS_URL": f"redis://127.0.0.1:{closed_port()}/5"})

    body = readyz(gateway).json()

    assert body["status"] == "unavailable"
    assert body["checks"]["cache"].startswith("error: ")
    assert body["checks"]["database"] == "ok"


def test_broker_down_is_named_without_its_password(gateway_server) -> None:
    broker = f"amqp://gateway:hunter2-broker-pw@127.0.0.1:{closed_port()}//"
    gateway = gateway_server(env={"CELERY_BROKER_URL": broker})

    response = readyz(gateway)

    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("error: ")
    assert response.json()["checks"]["database"] == "ok"
    assert "hunter2" not in response.text
    assert "hunter2" not in gateway.log()


def test_filesystem_broker_is_ok_only_when_its_folders_are_usable(tmp_path: Path, monkeypatch) -> None:
    targets = ops.ReadinessTargets(
        broker_url="filesystem://",
        broker_transport_options={
            "data_folder_in": str(tmp_path / "queue"),
            "data_folder_out": str(tmp_path / "queue"),
            "processed_folder": str(tmp_path / "processed"),
        },
        broker_dir=tmp_path,
        secrets=(),
    )
    monkeypatch.setattr(ops, "readiness_targets", lambda: targets)
    (tmp_path / "queue").mkdir()
    results = ops.run_checks((("broker", ops.check_broker),))
    assert results["broker"] == f"error: folder {tmp_path / 'processed'} does not exist"

    (tmp_path / "processed").mkdir()
    assert ops.run_checks((("broker", ops.check_broker),)) == {"broker": "ok"}


def test_checks_run_concurrently_and_a_hung_one_is_cut_off() -> None:
    def slow() -> None:
        time.sleep(0.6)

    def failing() -> None:
        raise ConnectionError("refused by postgres://app:pa55word@db:5432/x")

    started = time.monotonic()
    results = ops.run_checks(
        (("a", slow), ("b", slow), ("c", failing), ("d", lambda: time.sleep(5))),
        timeout_s=1.0,
    )
    elapsed_s = time.monotonic() - started

    assert elapsed_s < 1.5  # not 0.6 + 0.6 + 5: they ran side by side
    assert results["a"] == results["b"] == "ok"
    assert results["c"] == "error: refused by postgres://***@db:5432/x"
    assert results["d"] == "error: no answer within 1s"


class TcpRelay:
    """A loopback TCP relay to a real server that a test can cut, like a network partition."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.open:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                return
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        self.open = False
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@requires_postgres
def test_gateway_whose_database_went_away_keeps_proxying_and_readyz_says_so(
    gateway_server, echo_upstream: EchoUpstream
) -> None:
    from tests.support.servers import test_database_url

    make_service("orders", echo_upstream.url)
    make_public_app("/api/v1/orders/*")
    db = urlsplit(test_database_url())
    relay = TcpRelay(db.hostname or "127.0.0.1", db.port or 5432)
    relayed = test_database_url().replace(f"{db.hostname}:{db.port}", f"127.0.0.1:{relay.port}", 1)
    gateway = gateway_server(workers=2, env={"DATABASE_URL": relayed})
    for _ in range(4):  # every worker loads its snapshot while the database is there
        assert requests.get(gateway.url + "/api/v1/orders/warm", timeout=10).status_code == 200
    assert readyz(gateway).status_code == 200

    relay.cut()

    for i in range(6):
        response = requests.get(gateway.url + f"/api/v1/orders/{i}", timeout=10)
        assert response.status_code == 200, response.text
        assert echo_upstream.last.target == f"/api/v1/orders/{i}"
    body = readyz(gateway).json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"].startswith("error: ")
    assert body["checks"]["snapshot"] == "ok"
    assert os.environ.get("DATABASE_URL", "").startswith("postgres")
