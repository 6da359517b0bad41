"""Which real backing servers this run uses, and skip markers naming the missing one."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from tests.support.servers import port_open


def redis_url() -> str | None:
    """Return the REDIS_URL under test, or None when Redis is not configured or not up."""
    url = os.environ.get("REDIS_URL")
    return url if url and port_open(url) else None


def amqp_url() -> str | None:
    """Return the CELERY_BROKER_URL when it is amqp:// and RabbitMQ answers, else None."""
    url = os.environ.get("CELERY_BROKER_URL", "")
    return url if url.startswith("amqp://") and port_open(url.replace("amqp://", "http://", 1)) else None


def using_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


requires_redis = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="needs Redis: set REDIS_URL (CI always does)"
)
requires_rabbitmq = pytest.mark.skipif(
    not os.environ.get("CELERY_BROKER_URL", "").startswith("amqp://"),
    reason="needs RabbitMQ: set CELERY_BROKER_URL=amqp://... (CI always does)",
)
requires_postgres = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith(("postgres", "postgresql")),
    reason="needs PostgreSQL: set DATABASE_URL=postgres://... (CI always does)",
)
