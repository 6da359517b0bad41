"""The quick start: the demo seed, the demo upstreams, and a request through a real gateway."""

from __future__ import annotations

import importlib.util
import io
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command

from access.keys import hash_verify, key_split
from access.models import ApiKey, Application, EndpointWhitelist
from demo.upstream import make_server
from routing.models import ServiceConfig
from tests.support.upstream import free_port

KEY_RE = re.compile(r"gk_[0-9a-f]{12}\.[A-Za-z0-9_-]{43,}")
PASSWORD_RE = re.compile(r"user: admin\s+password: (\S+)")
ROOT = Path(__file__).resolve().parents[2]


def seed() -> str:
    out = io.StringIO()
    call_command("gateway_seed_demo", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_seed_creates_the_demo_configuration_once() -> None:
    output = seed()
    services = {
        s.service_name: (s.default_url, s.route_prefix, s.upstream_prefix, s.is_active)
        for s in ServiceConfig.objects.all()
    }
    assert services == {
        "monolith": ("http://127.0.0.1:7000", "/api/v1", None, True),
        "auth": ("http://127.0.0.1:7200", "/api/v1/auth", "/api/auth", True),
        "pipeline": ("http://127.0.0.1:7202", "/api/v1/pipelines", None, True),
        "notifications": ("queue://email", "/api/v1/notifications/email", None, True),
    }
    app = Application.objects.get()
    paths = set(EndpointWhitelist.objects.filter(application=app).values_list("endpoint_path", flat=True))
    assert {"/api/v1/pipelines/*", "/api/v1/auth/*", "/api/v1/notifications/email", "/api/v1/*"} <= paths

    # The key is printed once and verifies against the stored argon2id hash.
    keys = KEY_RE.findall(output)
    assert len(set(keys)) == 1
    prefix, secret = key_split(keys[0])
    stored = ApiKey.objects.get(application=app)
    assert stored.key_prefix == prefix
    assert hash_verify(stored.api_key_hash, secret)

    password = PASSWORD_RE.search(output).group(1)
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password(password)

    # Idempotent: a second run changes nothing and prints no secret.
    again = seed()
    assert not KEY_RE.search(again)
    assert password not in again
    assert ServiceConfig.objects.count() == 4
    assert ApiKey.objects.count() == 1
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
def test_seed_leaves_an_existing_configuration_alone() -> None:
    ServiceConfig.objects.create(service_name="mine", default_url="http://127.0.0.1:9")
    output = seed()
    assert list(ServiceConfig.objects.values_list("service_name", flat=True)) == ["mine"]
    assert not Application.objects.exists()
    assert not KEY_RE.search(output)


@pytest.fixture
def demo_upstreams() -> Iterator[dict[str, str]]:
    """The three demo upstream servers, on free loopback ports."""
    servers = {name: make_server(name, "127.0.0.1", free_port()) for name in ("monolith", "auth", "pipeline")}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {name: f"http://127.0.0.1:{server.server_address[1]}" for name, server in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


def test_demo_upstream_reports_service_method_path_and_headers(demo_upstreams: dict[str, str]) -> None:
    response = requests.post(
        demo_upstreams["pipeline"] + "/api/v1/pipelines/7?run=1",
        data=b'{"x": 1}',
        headers={"X-Request-ID": "abc"},
        timeout=5,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "pipeline"
    assert body["method"] == "POST"
    assert body["path"] == "/api/v1/pipelines/7"
    assert body["query"] == "run=1"
    assert body["headers"]["X-Request-ID"] == "abc"
    assert body["body"] == '{"x": 1}'


@pytest.mark.skipif(
    importlib.util.find_spec("routing.pipeline") is None, reason="the request pipeline (routing) is not in this tree"
)
def test_demo_key_reaches_the_pipeline_upstream_through_a_live_gateway(
    gateway_server, demo_upstreams: dict[str, str]
) -> None:
    """The README's first curl: the printed key reaches the demo pipeline upstream."""
    output = seed()
    plaintext = KEY_RE.search(output).group(0)
    # Same demo configuration, pointed at this run's free ports instead of 7000/7200/7202.
    for name, url in demo_upstreams.items():
        service = ServiceConfig.objects.get(service_name=name)
        service.default_url = url
        service.full_clean()
        service.save()
        service.versions.update(url=url)  # the demo's weighted versions share that upstream
    gateway = gateway_server()

    pipelines = requests.get(gateway.url + "/api/v1/pipelines", headers={"X-API-Key": plaintext}, timeout=10)
    assert pipelines.status_code == 200, pipelines.text
    assert pipelines.json()["service"] == "pipeline"
    assert pipelines.json()["path"] == "/api/v1/pipelines"
    assert "X-API-Key" not in pipelines.json()["headers"]

    auth = requests.get(gateway.url + "/api/v1/auth/me", headers={"X-API-Key": plaintext}, timeout=10)
    assert auth.status_code == 200, auth.text
    assert (auth.json()["service"], auth.json()["path"]) == ("auth", "/api/auth/me")

    anonymous = requests.get(gateway.url + "/api/v1/pipelines", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "missing_api_key"


def test_make_creates_a_private_env_with_a_generated_secret_key_once(tmp_path: Path) -> None:
    """`make run` writes .env with a fresh SECRET_KEY and DEBUG=false, and never overwrites it."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    run = [shutil.which("make") or "make", "--no-print-directory", ".env", f"PYTHON={sys.executable}"]
    subprocess.run(run, cwd=tmp_path, check=True, capture_output=True, timeout=60)
    env_file = tmp_path / ".env"
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and line[0] != "#")
    assert values["DEBUG"] == "false"
    assert len(values["SECRET_KEY"]) >= 50
    assert not values["SECRET_KEY"].startswith("$")  # django-environ would read it as a reference
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600

    first = env_file.read_text()
    subprocess.run(run, cwd=tmp_path, check=True, capture_output=True, timeout=60)
    assert env_file.read_text() == first


def test_make_run_migrates_and_seeds_before_starting_the_procfile() -> None:
    dry = subprocess.run(
        [shutil.which("make") or "make", "-n", "-W", "requirements.txt", "-o", ".env", "run"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    steps = [line for line in dry.splitlines() if "manage.py" in line or "honcho" in line]
    assert "manage.py migrate --noinput" in steps[0]
    assert "manage.py gateway_seed_demo" in steps[1]
    assert "honcho --procfile Procfile start" in steps[2]
