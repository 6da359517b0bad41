"""Fixtures and helpers for the queue tests: real brokers, real ``celery worker`` processes.

No tests here; the queue test modules import what they use (the ``*_fixture``
functions register under their ``name``). Handlers that tests plug
in through ``GATEWAY_QUEUE_HANDLERS`` live here too, so the worker processes can
import them by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kombu import Connection
from kombu.exceptions import ChannelError

from queues import topology
from queues.client import QueueClient
from queues.handlers.base import TaskInput, TransientError
from queues.models import TaskStatus
from tests.support.backends import amqp_url, redis_url
from tests.support.servers import ROOT, base_env

CELERY = str(Path(sys.executable).with_name("celery"))
HANDLERS = "tests.integration.test_queue_fixtures"


# --- Handlers the tests plug in (imported by the worker processes) -------------------------


def record(task: TaskInput) -> dict[str, object]:
    """Succeed with what the handler received, so tests can assert on the message."""
    return {
        "body": task.body,
        "path": task.path,
        "query": task.query,
        "method": task.method,
        "headers": dict(task.headers),
        "application_id": task.application_id,
        "request_id": task.request_id,
        "received_at": task.received_at,
        "attempt": task.attempt,
    }


def always_transient(task: TaskInput) -> None:
    """Fail like a provider that is down, every time."""
    raise TransientError("provider unavailable")


def transient_once(task: TaskInput) -> dict[str, int]:
    """Fail the first attempt, succeed on the next."""
    if task.attempt < 2:
        raise TransientError("provider unavailable")
    return {"attempt": task.attempt}


def hang_on_first_attempt(task: TaskInput) -> dict[str, int]:
    """On the first attempt, write ``<pid>`` to a marker file and hang; succeed on later ones."""
    if task.attempt == 1:
        marker = Path(os.environ["QUEUE_TEST_MARKER_DIR"]) / f"{task.task_id}.started"
        marker.write_text(str(os.getpid()))
        time.sleep(120)
    return {"attempt": task.attempt, "pid": os.getpid()}


# --- Brokers ----------------------------------------------------------------------------------


@dataclass
class Broker:
    """One broker under test: its URL, filesystem folder, and direct access for assertions."""

    kind: str
    url: str
    folder: Path

    @property
    def transport_options(self) -> dict:
        options = topology.transport_options(self.url, str(self.folder))
        if self.kind in ("redis", "sqlite"):
            options["visibility_timeout"] = 4
        return options

    def env(self) -> dict[str, str]:
        """Return the environment pointing a gateway or worker at this broker."""
        env = {"CELERY_BROKER_URL": self.url, "GATEWAY_BROKER_DIR": str(self.folder)}
        if self.kind in ("redis", "sqlite"):
            env["CELERY_VISIBILITY_TIMEOUT_S"] = "4"  # a killed worker's message comes back fast
        return env

    def connection(self) -> Connection:
        return Connection(self.url, transport_options=self.transport_options, connect_timeout=5)

    def client(self, timeout_s: float = 5.0) -> QueueClient:
        return QueueClient(self.url, timeout_s=timeout_s, transport_options=self.transport_options)

    def purge(self) -> None:
        """Empty the five queues and their dead-letter queues (CI shares one RabbitMQ)."""
        with self.connection() as conn:
            channel = conn.default_channel
            for queue in (*topology.all_queues(), *topology.all_dead_letter_queues()):
                bound = queue(channel)
                bound.declare()
                bound.purge()

    def take_all(self, queue_name: str) -> list[tuple[dict, dict]]:
        """Consume every message waiting in ``queue_name``; return ``(headers, message kwarg)`` pairs."""
        queue = next(q for q in (*topology.all_queues(), *topology.all_dead_letter_queues()) if q.name == queue_name)
        taken = []
        with self.connection() as conn:
            bound = queue(conn.default_channel)
            bound.declare()
            while (message := bound.get(no_ack=False)) is not None:
                _args, kwargs, _embed = message.decode()
                taken.append((dict(message.headers or {}), kwargs["message"]))
                message.ack()
        return taken

    def depth(self, queue_name: str) -> int:
        """Return the number of messages waiting in ``queue_name`` (0 when it does not exist)."""
        with self.connection() as conn:
            try:
                ok = conn.channel().queue_declare(queue=queue_name, passive=True)
            except ChannelError:
                return 0  # Redis keeps no empty queue
            return int(ok.message_count)


def _make_broker(kind: str, tmp_path: Path) -> Broker:
    folder = tmp_path / "broker"
    if kind == "sqlite":
        folder.mkdir(parents=True, exist_ok=True)
        return Broker("sqlite", "sqlite://", folder)
    if kind == "filesystem":
        for name in ("queue", "processed", "control"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        return Broker("filesystem", "filesystem://", folder)
    if kind == "amqp":
        url = amqp_url()
        if url is None:
            pytest.skip("needs RabbitMQ: set CELERY_BROKER_URL=amqp://... (CI always does)")
        return Broker("amqp", url, folder)
    url = redis_url()
    if url is None:
        pytest.skip("needs Redis: set REDIS_URL (CI always does)")
    return Broker("redis", url, folder)


@pytest.fixture(name="broker", params=["sqlite", "filesystem", "amqp", "redis"])
def broker_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """Each broker in turn: the serverless default (SQLite), filesystem, RabbitMQ and Redis (skipped when absent)."""
    made = _make_broker(request.param, tmp_path)
    made.purge()
    yield made
    made.purge()


@pytest.fixture(name="default_broker")
def default_broker_fixture(tmp_path: Path) -> Iterator[Broker]:
    """The production-like broker of this run: RabbitMQ when configured, else Redis, else the embedded SQLite one."""
    kind = "amqp" if amqp_url() else "redis" if redis_url() else "sqlite"
    made = _make_broker(kind, tmp_path)
    made.purge()
    yield made
    made.purge()


# --- Workers ------------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """A real ``celery -A gateway_project worker`` in its own process group."""

    name: str
    env: dict[str, str]
    log_path: Path
    queues: str
    concurrency: int = 1
    process: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    def start(self, timeout_s: float = 40.0) -> WorkerProcess:
        cmd = [
            CELERY,
            "-A",
            "gateway_project",
            "worker",
            "-Q",
            self.queues,
            "-c",
            str(self.concurrency),
            "-P",
            "prefork",
            "-n",
            f"{self.name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "info",
            *self.extra_args,
        ]
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            if " ready." in self.log():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"worker not ready in {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children) at once."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """Cold shutdown (SIGQUIT): no waiting for tasks; unacknowledged messages go back."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGQUIT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None):
            self._log.close()


@pytest.fixture(name="worker")
def worker_fixture(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real workers: ``worker(broker, env={...}, queues="sms", name="w1")``; stopped at teardown.

    Retries are fast (0.05 s base backoff, 2 retries) unless ``env`` says otherwise.
    """
    started: list[WorkerProcess] = []
    markers = tmp_path / "markers"
    markers.mkdir()

    def start(
        broker: Broker,
        *,
        env: dict[str, str] | None = None,
        queues: str = ",".join(topology.QUEUE_NAMES),
        name: str = "w1",
        concurrency: int = 1,
    ) -> WorkerProcess:
        worker_env = base_env(
            GATEWAY_TASK_RETRY_BACKOFF_S="0.05",
            GATEWAY_TASK_RETRY_BACKOFF_MAX_S="0.2",
            GATEWAY_TASK_MAX_RETRIES="2",
            QUEUE_TEST_MARKER_DIR=str(markers),
            **broker.env(),
        )
        worker_env.update(env or {})
        proc = WorkerProcess(
            name=name,
            env=worker_env,
            log_path=tmp_path / f"worker-{name}-{len(started)}.log",
            queues=queues,
            concurrency=concurrency,
        )
        started.append(proc)
        return proc.start()

    start.markers = markers  # type: ignore[attr-defined]  # where hang_on_first_attempt writes
    yield start
    for proc in started:
        proc.stop()


def wait_for_task(task_id: str, statuses: set[str], timeout_s: float = 30.0, log: Callable[[], str] | None = None):
    """Poll the status table until the task reaches one of ``statuses``; return the row."""
    deadline = time.monotonic() + timeout_s
    task = None
    while time.monotonic() < deadline:
        task = TaskStatus.objects.filter(pk=task_id).first()
        if task is not None and task.status in statuses:
            return task
        time.sleep(0.1)
    details = f"\nworker log:\n{log()[-4000:]}" if log else ""
    raise AssertionError(f"task {task_id} is {task and task.status}, not {statuses} after {timeout_s}s{details}")


def wait_for_file(path: Path, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear in {timeout_s}s")


def slow_analytics(task: TaskInput) -> object:
    """The default analytics handler after a short pause, so a fault lands while tasks run."""
    from queues.handlers import analytics

    time.sleep(0.2)
    return analytics.handle(task)
