"""docker-compose.yml and the Procfile run exactly the processes of SPEC §2."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

GATEWAY_CMD = "gunicorn -c gateway_project/gunicorn.conf.py gateway_project.wsgi:application"
ADMIN_CMD = "gunicorn -c gateway_project/gunicorn.conf.py -b 0.0.0.0:4201 admin_panel.wsgi:application"
WORKER_CMD = "celery -A gateway_project worker -Q email,sms,ai,analytics,execution"
APP_SERVICES = ("migrate", "gateway", "admin", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def command(service: dict[str, Any]) -> str:
    cmd = service["command"]
    return shlex.join(cmd) if isinstance(cmd, list) else cmd


def test_stack_has_the_servers_a_migrate_job_and_the_three_processes(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "rabbitmq", "redis", "migrate", "gateway", "admin", "worker"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["rabbitmq"]["image"].startswith("rabbitmq:")
    assert services["redis"]["image"].startswith("redis:")


def test_commands_are_the_spec_start_commands(services: dict[str, Any]) -> None:
    assert command(services["gateway"]) == GATEWAY_CMD
    assert command(services["admin"]) == ADMIN_CMD
    assert command(services["worker"]) == WORKER_CMD
    assert command(services["migrate"]) == "python manage.py migrate --noinput"
    assert services["migrate"]["restart"] == "no"


def test_ports_are_4200_and_4201(services: dict[str, Any]) -> None:
    assert services["gateway"]["ports"] == ["4200:4200"]
    assert services["admin"]["ports"] == ["4201:4201"]
    for name in ("postgres", "rabbitmq", "redis", "worker", "migrate"):
        assert "ports" not in services[name], f"{name} should not be published on the host"


def test_every_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
    assert "/healthz" in " ".join(services["gateway"]["healthcheck"]["test"])
    assert "4201/healthz" in " ".join(services["admin"]["healthcheck"]["test"])


def test_app_processes_wait_for_healthy_servers_and_the_migration(services: dict[str, Any]) -> None:
    for name in ("gateway", "admin", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        for server in ("postgres", "redis", "rabbitmq"):
            assert depends[server]["condition"] == "service_healthy", (name, server)
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_app_processes_read_env_file_and_use_the_stack_servers(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        service = services[name]
        assert service["env_file"] == ".env", name
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert env["CELERY_BROKER_URL"].startswith("amqp://") and "@rabbitmq:5672" in env["CELERY_BROKER_URL"]
        assert service["build"] == "."


def test_no_secret_is_written_into_the_compose_file(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "SECRET_KEY:" not in text
    postgres_env = compose["services"]["postgres"]["environment"]
    assert postgres_env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert compose["services"]["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"].startswith("${RABBITMQ_PASSWORD:?")


def test_dockerfile_runs_the_gateway_as_an_unprivileged_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11" in text
    assert "\nUSER gateway\n" in text
    assert "pip install -r requirements.txt" in text


def test_procfile_runs_the_spec_commands_and_the_demo_upstreams() -> None:
    lines = (ROOT / "Procfile").read_text().splitlines()
    processes = dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))
    assert processes["gateway"] == GATEWAY_CMD
    assert processes["admin"] == ADMIN_CMD
    assert processes["worker"] == WORKER_CMD
    demo_ports = {name: shlex.split(cmd)[-1] for name, cmd in processes.items() if "demo.upstream" in cmd}
    assert demo_ports == {"monolith": "7000", "auth": "7200", "pipeline": "7202"}


def test_env_example_lists_every_spec_variable() -> None:
    text = (ROOT / ".env.example").read_text()
    names = {
        line.lstrip("# ").split("=", 1)[0]
        for line in text.splitlines()
        if "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
    }
    spec = {
        "DATABASE_URL",
        "REDIS_URL",
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "SECRET_KEY",
        "DEBUG",
        "ALLOWED_HOSTS",
        "EMAIL_URL",
        "SMS_PROVIDER_URL",
        "AI_SERVICE_URL",
        "GATEWAY_CALLBACK_SECRET",
        "GATEWAY_ADMIN_API_ON_PUBLIC_PORT",
        "GATEWAY_TRUSTED_PROXIES",
        "GATEWAY_UPSTREAM_TIMEOUT_MS",
        "GATEWAY_BREAKER_FAILURES",
        "GATEWAY_BREAKER_OPEN_S",
        "GATEWAY_MAX_BODY_BYTES",
        "GATEWAY_TASK_MAX_RETRIES",
        "GATEWAY_QUEUE_HANDLERS",
        "EXECUTION_SERVICE",
        "WEB_CONCURRENCY",
        "GUNICORN_CMD_ARGS",
        "POSTGRES_PASSWORD",
        "RABBITMQ_PASSWORD",
    }
    assert spec <= names, sorted(spec - names)
    assert any(name.startswith("GATEWAY_SERVICE_KEY_") for name in names)
    assert "X_FILE" in text or "_FILE" in text


def test_env_example_lists_every_variable_of_the_readme_tables() -> None:
    """Each variable a README table documents has a commented line in .env.example.

    A table's ``<NAME>``/``<APP>`` placeholder is matched by any example name with that
    prefix (``GATEWAY_SERVICE_KEY_PIPELINE`` for ``GATEWAY_SERVICE_KEY_<NAME>``).
    """
    env_text = (ROOT / ".env.example").read_text()
    examples = {line.lstrip("# ").split("=", 1)[0] for line in env_text.splitlines() if "=" in line}
    documented: set[str] = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            documented.update(part.strip("` ") for part in first_cell.split(",") if part.strip().startswith("`"))
    variables = {n for n in documented if n[:1].isalpha() and n.split("<", 1)[0].rstrip("_").isupper() and "_" in n}

    def listed(name: str) -> bool:
        stem = name.split("<", 1)[0]
        return any(example == name or ("<" in name and example.startswith(stem)) for example in examples)

    missing = [name for name in sorted(variables) if not listed(name)]
    assert len(variables) > 40, sorted(variables)
    assert not missing, missing
