"""The Celery app of the gateway's workers (SPEC §5).

Five queues (``email``, ``sms``, ``ai``, ``analytics``, ``execution``), each with a
dead-letter queue, declared explicitly in :mod:`queues.topology`. The broker comes
from ``CELERY_BROKER_URL`` (default ``sqlite://``, a file under ``GATEWAY_BROKER_DIR``,
so the quick start needs no server: ``queues.sqlite_transport``); its transport options
from the settings.

Delivery guarantees set here: a message is acknowledged only after its handler
finished (``acks_late``), is given back to the broker when the worker process dies
(``reject_on_worker_lost``), and a worker process holds one message at a time
(prefetch 1), so a killed worker loses at most the message it was running, which the
broker redelivers to another worker. An infrastructure error while handling a message
is a reject with requeue (``queues.tasks``), never an acknowledgement, so
``task_acks_on_failure_or_timeout`` only ever acknowledges what the task base already
dead-lettered.
"""

import os

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready

from queues import topology

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

app = Celery("gateway_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=topology.all_queues(),
    task_default_queue="email",
    task_default_exchange=topology.EXCHANGE_NAME,
    task_create_missing_queues=False,
    task_routes={topology.task_name(name): {"queue": name} for name in topology.QUEUE_NAMES},
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_acks_on_failure_or_timeout=True,  # failures are dead-lettered explicitly by the task base
    task_ignore_result=True,  # task status lives in the gateway_task table
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    # What handlers print (the console mail backend of the quick start writes the mail to
    # stdout) is logged at INFO as output, not as a WARNING.
    worker_redirect_stdouts_level="INFO",
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=5.0,
    timezone="UTC",
    enable_utc=True,
)
app.autodiscover_tasks(["queues"])


@worker_ready.connect
def declare_dead_letter_queues(sender: object = None, **kwargs: object) -> None:
    """Declare every dead-letter queue when a worker starts, so it exists before the first failure."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in topology.all_dead_letter_queues():
            queue(channel).declare()


@worker_ready.connect
def check_queue_handlers(sender: object = None, **kwargs: object) -> None:
    """Resolve every queue's handler at start, so a bad GATEWAY_QUEUE_HANDLERS shows up at once."""
    import logging

    from queues.registry import handler_for

    for name in topology.QUEUE_NAMES:
        try:
            handler_for(name)
        except Exception as exc:
            logging.getLogger("gateway.worker").error("queue handler unusable: %s", exc)


@worker_process_init.connect
def start_tracing(**kwargs: object) -> None:
    """Set up tracing in each pool process (after the fork: the exporter's thread is per process)."""
    from gateway_core import tracing
    from queues.spans import WORKER_SERVICE_NAME

    tracing.setup(WORKER_SERVICE_NAME)


@worker_process_shutdown.connect
def stop_tracing(**kwargs: object) -> None:
    """Export the spans still queued before a pool process exits (it skips atexit handlers)."""
    from gateway_core import tracing

    tracing.shutdown()
