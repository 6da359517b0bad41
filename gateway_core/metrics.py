"""Prometheus metrics of the gateway, correct across gunicorn workers (SPEC §8).

Every worker writes its samples to memory-mapped files in one directory per gunicorn
instance (prometheus-client's multiprocess mode); ``/metrics`` merges them, so a scrape
of any worker describes the whole node. The directory is ``PROMETHEUS_MULTIPROC_DIR``
when set (one per gunicorn instance: the gateway and the admin panel need different
ones), else a fresh temporary directory chosen by the gunicorn master at start and
removed when it exits. A process with no directory at all (``runserver``, the test
client) keeps its metrics in memory.

Label values are bounded: service and version names come from the configuration,
methods from a fixed set, status is the numeric code. Paths are never labels.

This module is imported by the gunicorn master (``on_starting``, ``child_exit``), before
gevent patches the standard library, so it must not import Django at module level:
``django.db`` made there would keep unpatched thread-locals in every worker.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from gateway_core import traffic

if TYPE_CHECKING:
    from django.http import HttpResponseBase
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from gateway_core.context import RequestContext
    from gateway_core.snapshot import Snapshot

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Anything else is counted as OTHER, so a client cannot mint label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Seconds; from a cached answer on loopback (5 ms) to the default upstream read timeout (30 s).
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Gateway error codes that mean the upstream (or the broker) failed, and their reason label.
UPSTREAM_ERROR_REASONS = {
    "upstream_unavailable": "unavailable",
    "upstream_timeout": "timeout",
    "circuit_open": "circuit_open",
    "queue_unavailable": "queue_unavailable",
}

# A gateway error body is small; anything larger is an upstream's answer, not ours.
_MAX_ERROR_BODY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    """The metric families of one process, and the registry ``/metrics`` reads."""

    registry: CollectorRegistry
    multiprocess: bool
    requests: Counter
    duration: Histogram
    upstream_errors: Counter
    rate_limited: Counter
    queue_published: Counter
    config_version: Gauge
    worker_config_version: Gauge
    # (service, version, method, status) -> its two children; bounded like the labels.
    children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = field(default_factory=dict)


def on_starting() -> None:
    """Choose and empty the multiprocess directory; called once by the gunicorn master.

    Workers are forked afterwards and inherit ``PROMETHEUS_MULTIPROC_DIR``. A directory
    the operator named is emptied of ``*.db`` files only; a temporary one is removed
    when the master exits.
    """
    directory = os.environ.get(MULTIPROC_ENV, "")
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        directory = tempfile.mkdtemp(prefix="gateway-metrics-")
        master_pid = os.getpid()

        def remove_directory() -> None:
            # Forked workers inherit atexit handlers; only the master owns the directory.
            if os.getpid() == master_pid:
                shutil.rmtree(directory, ignore_errors=True)

        atexit.register(remove_directory)
    os.environ[MULTIPROC_ENV] = directory
    gateway_metrics.cache_clear()


def child_exit(pid: int) -> None:
    """Drop the live gauges of worker ``pid``, which gunicorn reports as exited."""
    if not os.environ.get(MULTIPROC_ENV):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


_last_config_version: list[int] = [-1]  # per process; a list so the hot path updates it without `global`


@cache
def gateway_metrics() -> GatewayMetrics:
    """Return this process's metric families, created on first use (after any fork)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

    directory = os.environ.get(MULTIPROC_ENV, "")
    multiprocess = bool(directory)
    if multiprocess:
        Path(directory).mkdir(parents=True, exist_ok=True)  # a process not started by our gunicorn
    if multiprocess and not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus-client picks its value class when first imported; the directory
        # may have been chosen after that (gunicorn's on_starting), so pick again.
        values.ValueClass = values.get_value_class()
    registry = CollectorRegistry(auto_describe=True)
    _last_config_version[0] = -1
    return GatewayMetrics(
        registry=registry,
        multiprocess=multiprocess,
        requests=Counter(
            "gateway_requests_total",
            "Requests answered by the gateway's pipeline.",
            ("service", "version", "method", "status"),
            registry=registry,
        ),
        duration=Histogram(
            "gateway_request_duration_seconds",
            "Time from arrival until the response (headers) was ready.",
            ("service", "version"),
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        ),
        upstream_errors=Counter(
            "gateway_upstream_errors_total",
            "Upstream calls that failed: unavailable, timeout, circuit_open, queue_unavailable, "
            "or failed_over (the fallback answered instead).",
            ("service", "reason"),
            registry=registry,
        ),
        rate_limited=Counter(
            "gateway_rate_limited_total",
            "Requests refused with 429 rate_limited.",
            ("service",),
            registry=registry,
        ),
        queue_published=Counter(
            "gateway_queue_published_total",
            "Messages the broker confirmed, per queue.",
            ("queue",),
            registry=registry,
        ),
        config_version=Gauge(
            "gateway_config_version",
            "Version of the newest configuration snapshot loaded by a live worker.",
            registry=registry,
            multiprocess_mode="livemax",
        ),
        worker_config_version=Gauge(
            "gateway_worker_config_version",
            "Version of the configuration snapshot each live worker serves from (label pid).",
            registry=registry,
            multiprocess_mode="liveall",
        ),
    )


def observe_request(ctx: RequestContext, response: HttpResponseBase) -> None:
    """Count and time one finished request of the pipeline.

    Cheap: a few memory-mapped increments and an in-memory count for the dashboard; the
    response body is read only for a small JSON error the gateway itself produced.
    Called by the pipeline's finalize step, which logs (and survives) any exception.
    """
    metrics = gateway_metrics()
    service = ctx.route.service_name if ctx.route is not None else ""
    version = ctx.version.version if ctx.version is not None else ""
    method = ctx.request.method if ctx.request.method in METHODS else "OTHER"
    status = response.status_code
    duration_s = max(0.0, time.perf_counter() - ctx.started_at)

    key = (service, version, method, status)
    children = metrics.children.get(key)
    if children is None:  # once per label set: labels() costs more than the increment
        children = metrics.children[key] = (
            metrics.requests.labels(service, version, method, str(status)),
            metrics.duration.labels(service, version),
        )
    children[0].inc()
    children[1].observe(duration_s)

    code = gateway_error_code(ctx.request_id, response)
    reason = UPSTREAM_ERROR_REASONS.get(code or "")
    if reason is None and ctx.fallback_used:
        reason = "failed_over"
    if reason is not None:
        metrics.upstream_errors.labels(service, reason).inc()
    if code == "rate_limited" or (ctx.rate is not None and not ctx.rate.allowed):
        metrics.rate_limited.labels(service).inc()
    if (
        status == 202
        and ctx.version is not None
        and ctx.version.queue is not None
        # A replayed Idempotency-Key answers the first task's 202 and publishes nothing.
        and "Idempotent-Replayed" not in response
    ):
        metrics.queue_published.labels(ctx.version.queue).inc()
    _note_config_version(metrics, ctx.snapshot)
    traffic.record(
        service,
        status,
        duration_s,
        version=version,
        fallback=ctx.fallback_used,
        circuit_open=code == "circuit_open",
        upstream_failed=reason in ("unavailable", "timeout"),
    )


def gateway_error_code(request_id: str, response: HttpResponseBase) -> str | None:
    """Return the SPEC error code of a response the gateway itself produced, else None.

    An upstream's own 502 or 429 passes through unchanged and is not ours: ours is a
    small JSON ``{"error": {...}}`` body naming this request's id.
    """
    if response.status_code < 400 or response.streaming:
        return None
    content = getattr(response, "content", b"")
    if len(content) > _MAX_ERROR_BODY_BYTES or not content.startswith(b'{"error"'):
        return None
    try:
        error = json.loads(content)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(error, dict) or error.get("request_id") != request_id:
        return None
    code = error.get("code")
    return code if isinstance(code, str) else None


def _note_config_version(metrics: GatewayMetrics, snapshot: Snapshot | None) -> None:
    if snapshot is not None and snapshot.version != _last_config_version[0]:
        _last_config_version[0] = snapshot.version
        metrics.config_version.set(snapshot.version)


def on_snapshot_installed(sender: object, snapshot: Snapshot, **kwargs: object) -> None:
    """``snapshot_installed`` receiver: publish this worker's config version (``/admin/cache`` reads it)."""
    try:
        note_snapshot_installed(snapshot.version)
    except Exception as exc:  # metrics must never block a reload
        logging.getLogger("gateway.metrics").warning("cannot record the config version: %s", type(exc).__name__)


def note_snapshot_installed(version: int) -> None:
    """Record that this process now serves config ``version``."""
    metrics = gateway_metrics()
    metrics.worker_config_version.set(version)
    if version != _last_config_version[0]:
        _last_config_version[0] = version
        metrics.config_version.set(version)


def node_worker_versions() -> dict[int, int] | None:
    """Return ``{pid: config version}`` for every live worker of this node's gunicorn.

    None when this process runs outside a gunicorn with a multiprocess directory
    (its workers cannot be seen).
    """
    metrics = gateway_metrics()
    if not metrics.multiprocess:
        return None
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    versions: dict[int, int] = {}
    for family in registry.collect():
        if family.name == "gateway_worker_config_version":
            for sample in family.samples:
                versions[int(sample.labels["pid"])] = int(sample.value)
    return versions


def exposition() -> tuple[bytes, str]:
    """Return ``(body, content type)`` of every worker's metrics in Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from gateway_core.snapshot import installed

    metrics = gateway_metrics()
    _note_config_version(metrics, installed())
    if metrics.multiprocess:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = metrics.registry
    return generate_latest(registry), CONTENT_TYPE_LATEST
