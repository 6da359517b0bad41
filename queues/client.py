"""Publish task messages to the gateway's five queues, confirmed by the broker.

The gateway's producer publishes through :class:`QueueClient`, and so can any Python
service (the Auth service puts password-reset emails on ``email`` itself). It needs
only Celery/kombu and these modules (``client``, ``messages``, ``topology``)::

    from queues.client import QueueClient

    client = QueueClient("amqp://user:pass@rabbitmq:5672//")
    task_id = client.publish("email", {"to": "a@example.com", "subject": "Reset", "text": "..."},
                             callback_url="https://auth.internal/hooks/task", request_id=rid)

``publish`` returns only once the broker has the message (RabbitMQ publisher
confirm; Redis and filesystem accept synchronously) and raises :class:`PublishError`
otherwise, within ``timeout_s`` (default 5 s) in total.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping

from celery import Celery
from kombu import Connection, Producer
from kombu.pools import ProducerPool

from queues import topology
from queues.messages import TaskMessage, message_build


class PublishError(Exception):
    """The broker did not take the message (unreachable, refused, or no confirm in time)."""


class QueueClient:
    """Publish to the gateway's queues with the gateway's guarantees.

    ``broker_url`` and ``transport_options`` name the broker (options default to
    :func:`queues.topology.transport_options`: publisher confirms on amqp).
    ``timeout_s`` bounds getting a connection, connecting and confirming, in total.
    ``pool_limit`` connections are kept open per process and shared by all threads
    or greenlets; a publish waits (within ``timeout_s``) for a free one.
    """

    def __init__(
        self,
        broker_url: str,
        *,
        timeout_s: float = 5.0,
        transport_options: Mapping[str, object] | None = None,
        pool_limit: int = 10,
    ) -> None:
        options = dict(transport_options if transport_options is not None else topology.transport_options(broker_url))
        # The connection is built here rather than by Celery: Celery prefers the
        # CELERY_BROKER_URL environment variable over any broker it is given.
        self.connection = Connection(broker_url, transport_options=options, connect_timeout=timeout_s)
        self.producers = ProducerPool(self.connection.Pool(limit=pool_limit), limit=pool_limit)
        # Only builds the Celery task message (protocol 2); never connects itself.
        self.app = Celery("gateway-client", set_as_current=False)
        self.app.conf.update(task_serializer="json")
        self.timeout_s = timeout_s
        self._queues = {name: topology.work_queue(name) for name in topology.QUEUE_NAMES}

    def publish(
        self,
        queue: str,
        body: object,
        *,
        callback_url: str | None = None,
        request_id: str = "",
        application_id: str | None = None,
        task_id: str | None = None,
    ) -> str:
        """Publish ``body`` as a task on ``queue``; return its task id once the broker has it.

        Raise ValueError for an unknown queue or bad callback URL, PublishError when the
        broker does not confirm within ``timeout_s``.
        """
        if queue not in self._queues:
            raise ValueError(f"unknown queue {queue!r}; expected one of {', '.join(topology.QUEUE_NAMES)}")
        message = message_build(
            queue=queue,
            body=body,
            origin="service",
            task_id=task_id,
            request_id=request_id,
            application_id=application_id,
            callback_url=callback_url,
        )
        self.send(message)
        return message.task_id

    def send(self, message: TaskMessage) -> None:
        """Publish a built message and wait for the broker's confirm; raise PublishError."""
        deadline = time.monotonic() + self.timeout_s
        try:
            producer = self.producers.acquire(block=True, timeout=self.timeout_s)
        except Exception as exc:
            raise PublishError(f"no broker connection available: {exc.__class__.__name__}") from exc
        try:
            self._send(producer, message, deadline)
        except Exception as exc:
            # The connection may hold a half-finished publish or an unanswered confirm:
            # drop it so the next publish starts on a fresh one.
            _discard_connection(producer)
            raise PublishError(f"broker did not confirm the message: {_describe(exc)}") from exc
        finally:
            producer.release()

    def close(self) -> None:
        """Close every pooled connection."""
        self.producers.force_close_all()

    def _send(self, producer: Producer, message: TaskMessage, deadline: float) -> None:
        conn = producer.connection
        # Bounded connect: one attempt, no kombu retry loop on the request path.
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=_remaining(deadline))
        remaining = _remaining(deadline)
        self.app.send_task(
            topology.task_name(message.queue),
            kwargs={"message": message.to_dict()},
            # Worker logs name the task, never the body (it may hold personal data).
            kwargsrepr=f"{{'message': <{message.queue} task {message.task_id}>}}",
            task_id=message.task_id,
            queue=self._queues[message.queue],
            producer=producer,
            retry=False,
            timeout=remaining,
            confirm_timeout=remaining,
            ignore_result=True,
        )


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("publish timeout exceeded")
    return remaining


def _discard_connection(producer: Producer) -> None:
    # Best effort: the connection is being thrown away anyway.
    with contextlib.suppress(Exception):
        producer.connection.collect()


def _describe(exc: BaseException) -> str:
    # The class name and message, never the broker URL (it may carry a password).
    text = str(exc).split("\n", 1)[0][:200]
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
