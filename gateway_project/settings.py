"""Django settings, read from the environment (SPEC §9).

Every secret variable ``X`` may instead be given as ``X_FILE``: a path to a file
holding it (Docker secrets, Vault Agent, CSI drivers); the trailing newline is
stripped. A ``.env`` file at the project root is read in development.
"""

from __future__ import annotations

import os
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from queues import topology as _queue_topology

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file() and not os.environ.get("GATEWAY_IGNORE_DOTENV"):
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_VARIABLES = (
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "EMAIL_URL",
    "GATEWAY_CALLBACK_SECRET",
    "SMS_PROVIDER_URL",
    "AI_SERVICE_URL",
    "GATEWAY_SERVICE_KEY_<NAME>",
)


def secret(name: str, default: str | None = None) -> str | None:
    """Return env ``name``, or the content of the file named by ``name_FILE``.

    Setting both is refused: an operator who did so made a mistake we cannot resolve.
    """
    value = os.environ.get(name)
    path = os.environ.get(f"{name}_FILE")
    if value is not None and path:
        raise ImproperlyConfigured(f"Set either {name} or {name}_FILE, not both.")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    return value if value is not None else default


def service_keys() -> dict[str, str]:
    """Return ``{SERVICE_NAME: key}`` from every ``GATEWAY_SERVICE_KEY_<NAME>[_FILE]``."""
    prefix = "GATEWAY_SERVICE_KEY_"
    names = {n.removesuffix("_FILE") for n in os.environ if n.startswith(prefix)}
    keys = {n[len(prefix) :]: secret(n) for n in names}
    return {name: key for name, key in keys.items() if key}


DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY (or SECRET_KEY_FILE) in the environment, "
            "or DEBUG=true for local development."
        )
    SECRET_KEY = "insecure-development-key-set-SECRET_KEY-in-production"  # noqa: S105 - DEBUG only

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "routing",
    "access",
    "queues",
    "admin_panel",
]

MIDDLEWARE = [
    "gateway_project.edge.EdgeMiddleware",  # Host / TRACE / upgrade refusals in JSON, first (SPEC §4.2)
    "django.middleware.security.SecurityMiddleware",
    "gateway_project.unavailable.DatabaseUnavailableMiddleware",  # a database error: 503, never 500
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gateway_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "gateway_project.wsgi.application"

# --- Database -----------------------------------------------------------------------
DATABASE_URL = secret("DATABASE_URL", "sqlite:///var/gateway.sqlite3")
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # sqlite:///var/x.sqlite3 is relative to the project root, not the current directory.
    if _db["NAME"] and not Path(_db["NAME"]).is_absolute() and _db["NAME"] != ":memory:":
        _db["NAME"] = str(BASE_DIR / _db["NAME"])
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # A file (not in-memory) test database, so that live gunicorn processes started
    # by the integration tests see the same data as the test process.
    _db["TEST"] = {"NAME": str(Path(_db["NAME"]).with_name("test_" + Path(_db["NAME"]).name))}
    _db.setdefault("OPTIONS", {})["timeout"] = 20
else:
    from gateway_project import database as _database

    if _db["ENGINE"] == "django.db.backends.postgresql":
        _db["ENGINE"] = "gateway_project.postgresql"  # the stock backend, failing fast while refused

    # Seconds any answer from PostgreSQL is awaited (query, commit); 0: unbounded (long migrations).
    DATABASE_TIMEOUT_S = env.float("GATEWAY_DB_TIMEOUT_S", default=4.0)
    _db["CONN_HEALTH_CHECKS"] = True
    _options = _db.setdefault("OPTIONS", {})
    for _name, _value in _database.connection_options(answer_timeout_s=DATABASE_TIMEOUT_S).items():
        _options.setdefault(_name, _value)
    # A bounded pool per process (SPEC §6: connections bounded by workers, not clients); a
    # connection goes back to it when a request ends, so persistent connections are off.
    _db["CONN_MAX_AGE"] = 0
    _options["pool"] = _database.pool_options(
        size=env.int("GATEWAY_DB_POOL_SIZE", default=2),
        timeout_s=env.float("GATEWAY_DB_POOL_TIMEOUT_S", default=3.0),
        answer_timeout_s=DATABASE_TIMEOUT_S,
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (shared with rate limits and notifications when Redis is configured) -----
REDIS_URL = secret("REDIS_URL")
# Longest wait for one Redis command or connect (SPEC §4.6): a hung Redis costs a request at most this.
REDIS_TIMEOUT_MS = env.int("GATEWAY_REDIS_TIMEOUT_MS", default=250)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("GATEWAY_CACHE_PREFIX", default="gw"),
            "OPTIONS": {"socket_connect_timeout": REDIS_TIMEOUT_MS / 1000, "socket_timeout": REDIS_TIMEOUT_MS / 1000},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "gateway",
        }
    }

# --- Auth, sessions, security --------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
]

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto, cookies become Secure.
if env.bool("GATEWAY_BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
_https = env.bool("GATEWAY_HTTPS", default=not DEBUG and env.bool("GATEWAY_BEHIND_TLS_PROXY", default=False))
SESSION_COOKIE_SECURE = _https
CSRF_COOKIE_SECURE = _https
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every start without it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage",
    },
}
# Serve the admin's static files from the installed apps without collectstatic,
# so a fresh checkout is styled with DEBUG=false.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Django REST framework (admin API) -------------------------------------------------
REST_FRAMEWORK = {
    # Basic first: its WWW-Authenticate header makes anonymous requests 401 (not 403).
    # Both count failed logins per client IP (admin_panel/auth.py).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "admin_panel.auth.ThrottledBasicAuthentication",
        "admin_panel.auth.ThrottledTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    # The admin API's handler, behind one that answers 503 when the database is unavailable.
    "EXCEPTION_HANDLER": "gateway_project.unavailable.admin_api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "API gateway admin API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "admin_panel.api.schema.describe_model_rules",
    ],
}
# Failed staff logins (admin UI and API) per client IP and window; 0: no limit.
ADMIN_LOGIN_MAX_FAILURES = env.int("GATEWAY_ADMIN_LOGIN_MAX_FAILURES", default=10)
ADMIN_LOGIN_WINDOW_S = env.int("GATEWAY_ADMIN_LOGIN_WINDOW_S", default=60)

# --- Celery (SPEC §5) -------------------------------------------------------------------
# The embedded default needs no server and redelivers what a killed worker held (queues/sqlite_transport.py).
CELERY_BROKER_URL = secret("CELERY_BROKER_URL") or "sqlite://"
CELERY_RESULT_BACKEND = secret("CELERY_RESULT_BACKEND")
CELERY_BROKER_DIR = Path(env.str("GATEWAY_BROKER_DIR", default=str(BASE_DIR / "var" / "broker")))
# Queues, dead-letter queues, acks_late and prefetch are set in gateway_project/celery.py.
CELERY_BROKER_TRANSPORT_OPTIONS = _queue_topology.transport_options(CELERY_BROKER_URL, str(CELERY_BROKER_DIR))
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Seconds before a message taken but never acknowledged (a killed worker) is redelivered.
    _visibility_s = env.int("CELERY_VISIBILITY_TIMEOUT_S", default=3600)
    CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = _visibility_s
    # Sweep for such messages every few seconds (kombu's default is about every 100 s).
    CELERY_BROKER_TRANSPORT_OPTIONS["unacked_restore_interval"] = max(1, min(10, _visibility_s // 2))
    CELERY_BROKER_TRANSPORT_OPTIONS["unacked_restore_throttle"] = 1
if CELERY_BROKER_URL.startswith("sqlite://"):
    # Seconds a taken message stays leased to its worker (renewed while it runs it).
    CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = env.int("CELERY_VISIBILITY_TIMEOUT_S", default=30)
    CELERY_BROKER_DIR.mkdir(parents=True, exist_ok=True)
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _folder in ("queue", "processed", "control"):
        (CELERY_BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
# Worker retries: exponential backoff with jitter, base and cap in seconds (queues/conf.py).
QUEUES = {
    "RETRY_BACKOFF_S": env.float("GATEWAY_TASK_RETRY_BACKOFF_S", default=2.0),
    "RETRY_BACKOFF_MAX_S": env.float("GATEWAY_TASK_RETRY_BACKOFF_MAX_S", default=300.0),
    "PUBLISH_TIMEOUT_S": env.float("GATEWAY_QUEUE_PUBLISH_TIMEOUT_S", default=5.0),
    "CALLBACK_TIMEOUT_S": env.float("GATEWAY_CALLBACK_TIMEOUT_S", default=5.0),
    "IDEMPOTENCY_HOURS": env.int("GATEWAY_IDEMPOTENCY_HOURS", default=24),
}

# --- Email (the email queue's default handler) -----------------------------------------
EMAIL_URL = secret("EMAIL_URL") or "consolemail://"
vars().update(env.email_url_config(EMAIL_URL))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="gateway@localhost")

# --- Gateway knobs, read once into gateway_core.conf.GatewayConfig --------------------
GATEWAY = {
    "ADMIN_API_ON_PUBLIC_PORT": env.bool("GATEWAY_ADMIN_API_ON_PUBLIC_PORT", default=True),
    "TRUSTED_PROXIES": env.list("GATEWAY_TRUSTED_PROXIES", default=[]),
    "MAX_BODY_BYTES": env.int("GATEWAY_MAX_BODY_BYTES", default=10 * 1024 * 1024),
    "UPSTREAM_TIMEOUT_MS": env.int("GATEWAY_UPSTREAM_TIMEOUT_MS", default=30_000),
    "CONNECT_TIMEOUT_MS": env.int("GATEWAY_CONNECT_TIMEOUT_MS", default=5_000),
    "UPSTREAM_CA_BUNDLE": env.str("GATEWAY_UPSTREAM_CA_BUNDLE", default=""),
    "BREAKER_FAILURES": env.int("GATEWAY_BREAKER_FAILURES", default=5),
    "BREAKER_OPEN_S": env.float("GATEWAY_BREAKER_OPEN_S", default=30.0),
    "RELOAD_POLL_S": env.float("GATEWAY_RELOAD_POLL_S", default=0.5),
    "TASK_MAX_RETRIES": env.int("GATEWAY_TASK_MAX_RETRIES", default=5),
    "TASK_TTL_HOURS": env.int("GATEWAY_TASK_TTL_HOURS", default=72),
    "QUEUE_HANDLERS": env.dict("GATEWAY_QUEUE_HANDLERS", default={}),
    "CALLBACK_SECRET": secret("GATEWAY_CALLBACK_SECRET"),
    "CALLBACK_ALLOW_PRIVATE": env.bool("GATEWAY_CALLBACK_ALLOW_PRIVATE", default=False),
    "SERVICE_KEYS": service_keys(),
    # Provider URLs may embed credentials, so they are secrets too.
    "SMS_PROVIDER_URL": secret("SMS_PROVIDER_URL", ""),
    "AI_SERVICE_URL": secret("AI_SERVICE_URL", ""),
    "EXECUTION_SERVICE": env.str("EXECUTION_SERVICE", default="pipeline"),
    "RATELIMIT_FAIL_OPEN": env.bool("GATEWAY_RATELIMIT_FAIL_OPEN", default=True),
    # Without Redis, rate limits count in this SQLite file, shared by every worker of the node.
    "RATELIMIT_DB": env.str("GATEWAY_RATELIMIT_DB", default=str(BASE_DIR / "var" / "ratelimit.sqlite3")),
    "METRICS_DIR": env.str("PROMETHEUS_MULTIPROC_DIR", default=""),
}

# --- Logging: JSON lines on stdout ------------------------------------------------------
LOG_LEVEL = env.str("GATEWAY_LOG_LEVEL", default="INFO").upper()
# json (one object per line, for log shippers) or text (for people at a terminal).
LOG_FORMAT = env.str("GATEWAY_LOG_FORMAT", default="json").lower()
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"GATEWAY_LOG_FORMAT must be json or text, not {LOG_FORMAT!r}")
# The access log (one line per request) is written at INFO; GATEWAY_ACCESS_LOG=false silences it.
ACCESS_LOG_LEVEL = "INFO" if env.bool("GATEWAY_ACCESS_LOG", default=True) else "CRITICAL"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "gateway_core.logging.JsonFormatter"},
        "text": {"()": "gateway_core.logging.TextFormatter"},
        "access_json": {"()": "gateway_core.logging.AccessJsonFormatter"},
        "access_text": {"()": "gateway_core.logging.AccessTextFormatter"},
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": LOG_FORMAT},
        "access": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": f"access_{LOG_FORMAT}"},
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "gateway.access": {"handlers": ["access"], "level": ACCESS_LOG_LEVEL, "propagate": False},
        "django.request": {"level": "ERROR"},
    },
}
# --- Operations: dashboard traffic counts without Redis (one machine), see gateway_core/traffic.py
GATEWAY_TRAFFIC_DIR = Path(env.str("GATEWAY_TRAFFIC_DIR", default=str(BASE_DIR / "var" / "traffic")))
