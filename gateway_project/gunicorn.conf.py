"""Shared gunicorn config for the gateway (4200) and the admin panel (-b :4201)."""

import os

bind = os.environ.get("GATEWAY_BIND", "0.0.0.0:4200")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
worker_connections = 1000
