"""Settings from the environment (SPEC §9): defaults, X_FILE secrets and start-up errors.

Each case imports the real settings module in a fresh interpreter with a controlled
environment, exactly as gunicorn or ``manage.py`` would start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "SECRET_KEY": settings.SECRET_KEY,
    "DEBUG": settings.DEBUG,
    "ENGINE": db["ENGINE"],
    "DB_NAME": str(db["NAME"]),
    "DB_HOST": db.get("HOST", ""),
    "DB_PASSWORD": db.get("PASSWORD", ""),
    "CACHE": settings.CACHES["default"]["BACKEND"],
    "CACHE_LOCATION": settings.CACHES["default"].get("LOCATION", ""),
    "BROKER": settings.CELERY_BROKER_URL,
    "ALLOWED_HOSTS": settings.ALLOWED_HOSTS,
    "SESSION_COOKIE_SECURE": settings.SESSION_COOKIE_SECURE,
    "SERVICE_KEYS": settings.GATEWAY["SERVICE_KEYS"],
    "CALLBACK_SECRET": settings.GATEWAY["CALLBACK_SECRET"],
}))
"""


def load_settings(**env: str) -> subprocess.CompletedProcess[str]:
    """Import ``gateway_project.settings`` in a child with exactly ``env`` (plus PATH)."""
    child_env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "GATEWAY_IGNORE_DOTENV": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def settings_of(**env: str) -> dict[str, object]:
    result = load_settings(**env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_defaults_are_secure_and_need_no_server() -> None:
    loaded = settings_of(SECRET_KEY="k" * 50)
    assert loaded["DEBUG"] is False
    assert loaded["ENGINE"] == "django.db.backends.sqlite3"
    assert loaded["DB_NAME"] == str(ROOT / "var" / "gateway.sqlite3")
    assert loaded["CACHE"] == "django.core.cache.backends.locmem.LocMemCache"
    assert loaded["BROKER"] == "sqlite://"  # the embedded broker: a file, redelivery of a dead worker's messages
    assert loaded["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]"]


def test_missing_secret_key_stops_start_with_a_clear_error() -> None:
    result = load_settings()
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY is not set" in result.stderr


def test_empty_secret_key_is_refused_too() -> None:
    result = load_settings(SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_debug_true_runs_without_secret_key() -> None:
    loaded = settings_of(DEBUG="true")
    assert loaded["DEBUG"] is True
    assert loaded["SECRET_KEY"]


def test_secret_key_file_is_read_with_trailing_newline_stripped(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    path.write_text("from-a-file-0123456789\n")
    assert settings_of(SECRET_KEY_FILE=str(path))["SECRET_KEY"] == "from-a-file-0123456789"


def test_secret_and_secret_file_both_set_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    path.write_text("from-a-file\n")
    result = load_settings(SECRET_KEY="from-env", SECRET_KEY_FILE=str(path))
    assert result.returncode != 0
    assert "Set either SECRET_KEY or SECRET_KEY_FILE, not both." in result.stderr
    assert "from-a-file" not in result.stderr
    assert "from-env" not in result.stderr


def test_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    result = load_settings(SECRET_KEY_FILE=str(tmp_path / "missing"))
    assert result.returncode != 0
    assert "SECRET_KEY_FILE: cannot read" in result.stderr


def test_database_url_selects_postgresql_and_may_come_from_a_file(tmp_path: Path) -> None:
    loaded = settings_of(SECRET_KEY="k", DATABASE_URL="postgres://gw:pw@db.internal:5432/gateway")
    assert loaded["ENGINE"] == "gateway_project.postgresql"  # the stock backend, failing fast while refused
    assert (loaded["DB_HOST"], loaded["DB_NAME"], loaded["DB_PASSWORD"]) == ("db.internal", "gateway", "pw")

    path = tmp_path / "database_url"
    path.write_text("postgres://gw:s3cret@db2.internal:5432/gw2\n")
    loaded = settings_of(SECRET_KEY="k", DATABASE_URL_FILE=str(path))
    assert (loaded["DB_HOST"], loaded["DB_NAME"], loaded["DB_PASSWORD"]) == ("db2.internal", "gw2", "s3cret")


def test_redis_url_switches_the_cache_to_redis() -> None:
    loaded = settings_of(SECRET_KEY="k", REDIS_URL="redis://127.0.0.1:6379/6")
    assert loaded["CACHE"] == "django.core.cache.backends.redis.RedisCache"
    assert loaded["CACHE_LOCATION"] == "redis://127.0.0.1:6379/6"


def test_broker_url_from_env(tmp_path: Path) -> None:
    path = tmp_path / "broker"
    path.write_text("amqp://gw:pw@mq:5672//\n")
    assert settings_of(SECRET_KEY="k", CELERY_BROKER_URL_FILE=str(path))["BROKER"] == "amqp://gw:pw@mq:5672//"


def test_service_keys_and_callback_secret_accept_file_variants(tmp_path: Path) -> None:
    key_file = tmp_path / "pipeline_key"
    key_file.write_text("pipeline-key\n")
    cb_file = tmp_path / "callback"
    cb_file.write_text("callback-secret\n")
    loaded = settings_of(
        SECRET_KEY="k",
        GATEWAY_SERVICE_KEY_AUTH="auth-key",
        GATEWAY_SERVICE_KEY_PIPELINE_FILE=str(key_file),
        GATEWAY_CALLBACK_SECRET_FILE=str(cb_file),
    )
    assert loaded["SERVICE_KEYS"] == {"AUTH": "auth-key", "PIPELINE": "pipeline-key"}
    assert loaded["CALLBACK_SECRET"] == "callback-secret"


@pytest.mark.parametrize(("env", "secure"), [({}, False), ({"GATEWAY_HTTPS": "true"}, True)])
def test_cookies_are_secure_when_served_over_https(env: dict[str, str], secure: bool) -> None:
    assert settings_of(SECRET_KEY="k", **env)["SESSION_COOKIE_SECURE"] is secure


def test_allowed_hosts_from_env() -> None:
    assert settings_of(SECRET_KEY="k", ALLOWED_HOSTS="gw.example.com,.internal")["ALLOWED_HOSTS"] == [
        "gw.example.com",
        ".internal",
    ]


def test_what_a_worker_prints_is_logged_as_info_not_as_a_warning() -> None:
    """The quick start's console mail backend prints each mail: output, not a warning (issue: log noise)."""
    from gateway_project.celery import app

    assert app.conf.worker_redirect_stdouts is not False
    assert app.conf.worker_redirect_stdouts_level == "INFO"
