"""Shared gunicorn config for the gateway (4200) and the admin panel (-b :4201)."""

import os

bind = os.environ.get("GATEWAY_BIND", "0.0.0.0:4200")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
worker_connections = 1000


def on_starting(server: object) -> None:
    from gateway_project import metrics

    metrics.on_starting()


def child_exit(server: object, worker: object) -> None:
    from gateway_project import metrics

    metrics.child_exit(worker.pid)  # type: ignore[attr-defined]  # gunicorn Worker
