"""The WSGI fast path gives back every database connection a request opened, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, threading
import gateway_project.wsgi as wsgi
from django.db import connection, transaction

seen = {}
connection.ensure_connection()  # as a queue route's task record would
seen["opened"] = connection.connection is not None
wsgi._release_database()
seen["given back"] = connection.connection is None
with transaction.atomic():
    connection.ensure_connection()
    wsgi._release_database()
    seen["kept inside a transaction"] = connection.connection is not None
wsgi._release_database()
seen["given back after it"] = connection.connection is None

def other():  # another greenlet or thread: its connection is its own to give back
    from django.db import connection as theirs
    theirs.ensure_connection()
    seen["noted where it was opened"] = len(wsgi._opened.connections) == 1

worker = threading.Thread(target=other)
worker.start(); worker.join()
seen["not noted here"] = not getattr(wsgi._opened, "connections", None)

for _ in range(5):  # Django's own handler closes what it opens; nothing piles up for the fast path
    connection.ensure_connection()
    connection.close()
seen["noted once"] = len(wsgi._opened.connections) == 1
print(json.dumps(seen))
"""


def test_a_request_gives_back_the_database_connections_it_opened(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path}/gateway.sqlite3",
        "SECRET_KEY": "unit-test-only-not-a-secret",
        "GATEWAY_IGNORE_DOTENV": "1",
        "GATEWAY_RATELIMIT_DB": str(tmp_path / "ratelimit.sqlite3"),
    }
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = done.stdout.strip().splitlines()[-1]
    assert seen == (
        '{"opened": true, "given back": true, "kept inside a transaction": true, "given back after it": true, '
        '"noted where it was opened": true, "not noted here": true, "noted once": true}'
    )
