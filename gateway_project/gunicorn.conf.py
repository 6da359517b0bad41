"""Shared gunicorn config for the gateway (4200) and the admin panel (-b :4201).

Worker model: gevent. A gateway spends nearly all of a request waiting on its
upstream; a gevent worker holds thousands of such waits at once, where sync or
gthread workers hold one per thread. Measured with bench/concurrency.py on the
2-core reference machine (docs/PERFORMANCE.md, "Worker model"): 200 concurrent
requests to a 1 s upstream all complete at p99 1.2 s with 2 gevent workers, a fast
route answering in 6 ms meanwhile; gthread 2x16 takes 7-8 s (p99) and keeps the fast
route waiting up to 6 s; 2 sync workers answer 18 of 200 within a 10 s timeout.
Every value below can be overridden by its variable, or by gunicorn's own
``WEB_CONCURRENCY`` and ``GUNICORN_CMD_ARGS``.
"""

import os

bind = os.environ.get("GATEWAY_BIND", "0.0.0.0:4200")
# One gevent worker per core: the work is CPU-light and concurrency comes from greenlets.
workers = int(os.environ.get("WEB_CONCURRENCY", str(max(os.cpu_count() or 1, 2))))
worker_class = os.environ.get("GATEWAY_WORKER_CLASS", "gevent")
# Concurrent connections per worker (each may be a slow upstream call or a long stream).
worker_connections = int(os.environ.get("GATEWAY_WORKER_CONNECTIONS", "1000"))
# Keep client connections open between requests (load balancers reuse them); 5 s default.
keepalive = int(os.environ.get("GATEWAY_KEEPALIVE_S", "5"))
# Heartbeat timeout: a gevent worker reports from its own greenlet, so long streams are fine.
timeout = int(os.environ.get("GATEWAY_WORKER_TIMEOUT_S", "60"))
graceful_timeout = int(os.environ.get("GATEWAY_GRACEFUL_TIMEOUT_S", "30"))
# The access log is the gateway's own JSON line (gateway_core.logging), not gunicorn's.
accesslog = None
# gunicorn's control socket defaults to one path per user: several gateways (or the gateway
# and the admin panel) on one host would take it from each other. Set a path to enable it.
control_socket = os.environ.get("GATEWAY_CONTROL_SOCKET", "")
control_socket_disable = not control_socket
# gunicorn believes X-Forwarded-Proto (and its other forwarding headers) only from these
# peers: the same networks the gateway trusts (GATEWAY_TRUSTED_PROXIES, default none), so a
# client on loopback is no more trusted than any other (gunicorn's own default is loopback).
forwarded_allow_ips = ",".join(
    part.strip() for part in os.environ.get("GATEWAY_TRUSTED_PROXIES", "").split(",") if part.strip()
)


def on_starting(server: object) -> None:
    from gateway_core import metrics

    metrics.on_starting()


def pre_request(worker: object, req: object) -> None:
    from gateway_core import server

    server.adopt(req)  # the gateway answers Expect: 100-continue itself, after its checks


def child_exit(server: object, worker: object) -> None:
    from gateway_core import metrics

    metrics.child_exit(worker.pid)  # type: ignore[attr-defined]  # gunicorn Worker
