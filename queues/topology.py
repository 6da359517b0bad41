"""The broker topology: the five work queues, their dead-letter queues and task names.

Pure kombu, no Django: the Celery app, the gateway's producer and services that
publish with :mod:`queues.client` must all declare the queues with the same
arguments (RabbitMQ refuses a redeclaration with different ones).
"""

from __future__ import annotations

from kombu import Exchange, Queue
from kombu.transport import TRANSPORT_ALIASES

# The embedded broker (queues/sqlite_transport.py), so that ``sqlite://`` names it everywhere.
TRANSPORT_ALIASES.setdefault("sqlite", "queues.sqlite_transport:Transport")
SQLITE_BROKER_FILE = "broker.sqlite3"

QUEUE_NAMES: tuple[str, ...] = ("email", "sms", "ai", "analytics", "execution")
DEAD_LETTER_SUFFIX = ".dlq"
CALLBACK_TASK = "gateway.callback"
CLEANUP_TASK = "gateway.cleanup"

EXCHANGE_NAME = "gateway"
# One direct exchange; every queue is bound by its own name, so routing by queue name
# works the same on every transport (amqp, redis, filesystem).
_EXCHANGE = Exchange(EXCHANGE_NAME, type="direct", durable=True)


def task_name(queue: str) -> str:
    """Return the Celery task name serving ``queue`` (``gateway.email``...)."""
    return f"gateway.{queue}"


def dead_letter_name(queue: str) -> str:
    """Return the name of ``queue``'s dead-letter queue (``email.dlq``)."""
    return queue + DEAD_LETTER_SUFFIX


def work_queue(queue: str) -> Queue:
    """Return the durable work queue ``queue``.

    On RabbitMQ a message the broker dead-letters (rejected without requeue,
    e.g. an undecodable message) lands in the dead-letter queue; the workers also
    move finally failed messages there themselves, which works on every transport.
    """
    if queue not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {queue!r}; expected one of {', '.join(QUEUE_NAMES)}")
    return Queue(
        queue,
        _EXCHANGE,
        routing_key=queue,
        durable=True,
        queue_arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_letter_name(queue),
        },
    )


def dead_letter_queue(queue: str) -> Queue:
    """Return the durable dead-letter queue of ``queue`` (nothing consumes it)."""
    if queue not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {queue!r}")
    name = dead_letter_name(queue)
    return Queue(name, _EXCHANGE, routing_key=name, durable=True)


def all_queues() -> tuple[Queue, ...]:
    """Return the five work queues (what workers consume)."""
    return tuple(work_queue(name) for name in QUEUE_NAMES)


def all_dead_letter_queues() -> tuple[Queue, ...]:
    """Return the five dead-letter queues."""
    return tuple(dead_letter_queue(name) for name in QUEUE_NAMES)


def transport_options(broker_url: str, broker_dir: str | None = None, publish_timeout_s: float = 5.0) -> dict:
    """Return kombu transport options for ``broker_url``.

    - ``amqp://``: publisher confirms (a publish returns only once RabbitMQ has the message).
    - ``redis://``: bounded socket timeouts; an unacknowledged message is redelivered
      after ``visibility_timeout`` seconds (set ``CELERY_VISIBILITY_TIMEOUT_S``).
    - ``sqlite://`` (the embedded default): the file ``broker.sqlite3`` under ``broker_dir``;
      a message a worker took is leased for ``visibility_timeout`` seconds and
      redelivered when its worker died (``queues.sqlite_transport``).
    - ``filesystem://``: the three folders under ``broker_dir``.
    """
    scheme = broker_url.split("://", 1)[0].lower()
    if scheme in ("amqp", "amqps", "pyamqp"):
        return {"confirm_publish": True}
    if scheme in ("redis", "rediss"):
        return {
            "socket_connect_timeout": publish_timeout_s,
            "socket_timeout": publish_timeout_s,
            "max_retries": 0,
        }
    if scheme == "sqlite":
        if not broker_dir:
            raise ValueError("the sqlite broker needs a directory (GATEWAY_BROKER_DIR)")
        return {"database": f"{broker_dir}/{SQLITE_BROKER_FILE}"}
    if scheme == "filesystem":
        if not broker_dir:
            raise ValueError("the filesystem broker needs a directory (GATEWAY_BROKER_DIR)")
        return {
            "data_folder_in": f"{broker_dir}/queue",
            "data_folder_out": f"{broker_dir}/queue",
            "processed_folder": f"{broker_dir}/processed",
            "control_folder": f"{broker_dir}/control",
            # Consumed files are renamed into ``processed`` (atomic on one filesystem,
            # so two workers never take the same message); the cleanup prunes them.
            "store_processed": True,
        }
    return {}
