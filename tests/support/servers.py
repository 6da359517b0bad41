"""Real gunicorn processes for integration tests, and probes for the backing servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def test_database_url() -> str:
    """Return a DATABASE_URL naming the test database this pytest run set up."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def port_open(url_or_host: str, port: int | None = None, timeout_s: float = 0.5) -> bool:
    """Return True when a TCP connect to the host:port (or the URL's) succeeds."""
    if port is None:
        parts = urlsplit(url_or_host)
        host, port = parts.hostname or "127.0.0.1", parts.port
    else:
        host = url_or_host
    try:
        with socket.create_connection((host, port or 0), timeout=timeout_s):
            return True
    except OSError:
        return False


def base_env(**overrides: str) -> dict[str, str]:
    """Return the environment for a child gateway process pointed at the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_SETTINGS_MODULE"))}
    env.update(
        SECRET_KEY=os.environ.get("SECRET_KEY", "test-secret-key-not-for-production"),
        DATABASE_URL=test_database_url(),
        ALLOWED_HOSTS="*",
        GATEWAY_IGNORE_DOTENV="1",
        PYTHONUNBUFFERED="1",
        GATEWAY_CALLBACK_ALLOW_PRIVATE="true",  # the tests' callback receivers listen on loopback
    )
    env.update(overrides)
    return env


@dataclass
class GunicornProcess:
    """A gunicorn serving ``app`` on a free loopback port; stdout/stderr captured to ``log_path``."""

    app: str
    port: int
    log_path: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/healthz", timeout_s: float = 30.0) -> GunicornProcess:
        cmd = [
            GUNICORN,
            "-c",
            str(ROOT / "gateway_project" / "gunicorn.conf.py"),
            "-b",
            f"127.0.0.1:{self.port}",
            *self.args,
            self.app,
        ]
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + ready_path, timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not become ready in {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()
