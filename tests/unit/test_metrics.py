"""Prometheus metrics: labels, derived counters, multiprocess files (gateway_core/metrics.py)."""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.http import HttpResponse, StreamingHttpResponse
from django.test import RequestFactory

from gateway_core import metrics, traffic
from gateway_core.context import RateDecision, RequestContext
from gateway_core.errors import ErrorCode, GatewayError
from gateway_core.snapshot import CompiledRoute, CompiledVersion, Snapshot

ROOT = Path(__file__).resolve().parents[2]


def make_ctx(
    *,
    method: str = "GET",
    path: str = "/api/v1/orders/1",
    service: str | None = "orders",
    version: str = "v1",
    queue: str | None = None,
    request_id: str = "req-1",
    snapshot_version: int = 3,
    headers: dict[str, str] | None = None,
    **fields: object,
) -> RequestContext:
    """Build the RequestContext the pipeline would hand to finalize."""
    request = RequestFactory().generic(method, path, headers=headers or {})
    target = CompiledVersion(version, f"queue://{queue}" if queue else "http://127.0.0.1:9/", 100, queue)
    route = None
    if service is not None:
        route = CompiledRoute(
            service_id="00000000-0000-0000-0000-000000000001",
            service_name=service,
            route_prefix=f"/api/v1/{service}",
            upstream_prefix=f"/api/v1/{service}",
            default=CompiledVersion("default", "http://127.0.0.1:9/", 0, None),
            current_version=None,
            fallback_url=None,
            timeout_ms=None,
            versions={version: target},
            service_key=None,
        )
    snapshot = Snapshot(
        version=snapshot_version,
        loaded_at=datetime.now(tz=UTC),
        routes=(route,) if route else (),
        routes_by_prefix={route.route_prefix: route} if route else {},
        applications={},
        keys={},
        public_entries=(),
    )
    values: dict[str, object] = {
        "request_id": request_id,
        "route": route,
        "version": target if route else None,
        "raw_path": path.split("?", 1)[0],
    }
    values.update(fields)
    return RequestContext(request=request, snapshot=snapshot, started_at=time.perf_counter() - 0.05, **values)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[metrics.GatewayMetrics, list[tuple[str, int, float]]]]:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    recorded: list[tuple[str, int, float]] = []
    monkeypatch.setattr(traffic, "record", lambda *args, **kwargs: recorded.append(args))
    metrics.gateway_metrics.cache_clear()
    yield metrics.gateway_metrics(), recorded
    metrics.gateway_metrics.cache_clear()


def sample(m: metrics.GatewayMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def gateway_error(ctx: RequestContext, status: int, code: ErrorCode) -> HttpResponse:
    return GatewayError(status, code, "refused").to_response(request_id=ctx.request_id)


def test_request_is_counted_with_service_version_method_and_status(fresh) -> None:
    m, recorded = fresh
    ctx = make_ctx(method="POST")
    metrics.observe_request(ctx, HttpResponse(status=201))

    assert sample(m, "gateway_requests_total", service="orders", version="v1", method="POST", status="201") == 1
    assert sample(m, "gateway_request_duration_seconds_count", service="orders", version="v1") == 1
    assert sample(m, "gateway_request_duration_seconds_sum", service="orders", version="v1") >= 0.05
    assert recorded[0][:2] == ("orders", 201)


def test_unknown_method_is_labelled_other_so_clients_cannot_mint_labels(fresh) -> None:
    m, _ = fresh
    metrics.observe_request(make_ctx(method="BREW"), HttpResponse(status=405))
    assert sample(m, "gateway_requests_total", service="orders", version="v1", method="OTHER", status="405") == 1


def test_unrouted_request_has_empty_service_and_version(fresh) -> None:
    m, recorded = fresh
    ctx = make_ctx(service=None)
    metrics.observe_request(ctx, gateway_error(ctx, 404, ErrorCode.ROUTE_NOT_FOUND))
    assert sample(m, "gateway_requests_total", service="", version="", method="GET", status="404") == 1
    assert recorded[0][:2] == ("", 404)


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (502, ErrorCode.UPSTREAM_UNAVAILABLE, "unavailable"),
        (504, ErrorCode.UPSTREAM_TIMEOUT, "timeout"),
        (503, ErrorCode.CIRCUIT_OPEN, "circuit_open"),
        (503, ErrorCode.QUEUE_UNAVAILABLE, "queue_unavailable"),
    ],
)
def test_gateway_upstream_failures_count_as_upstream_errors(fresh, status, code, reason) -> None:
    m, _ = fresh
    ctx = make_ctx()
    metrics.observe_request(ctx, gateway_error(ctx, status, code))
    assert sample(m, "gateway_upstream_errors_total", service="orders", reason=reason) == 1


def test_an_upstreams_own_502_is_not_an_upstream_error_of_the_gateway(fresh) -> None:
    m, _ = fresh
    ctx = make_ctx()
    upstream_answer = HttpResponse(b'{"error": "bad gateway upstream"}', status=502, content_type="application/json")
    metrics.observe_request(ctx, upstream_answer)
    # The same shape as ours, but for another request: an upstream echoing a gateway error.
    foreign = GatewayError(502, ErrorCode.UPSTREAM_UNAVAILABLE, "x").to_response(request_id="someone-else")
    metrics.observe_request(ctx, foreign)
    metrics.observe_request(ctx, StreamingHttpResponse(iter([b"x"]), status=502))
    assert sample(m, "gateway_upstream_errors_total", service="orders", reason="unavailable") == 0
    assert sample(m, "gateway_requests_total", service="orders", version="v1", method="GET", status="502") == 3


def test_a_response_served_by_the_fallback_counts_a_failed_over_upstream_error(fresh) -> None:
    m, _ = fresh
    metrics.observe_request(make_ctx(fallback_used=True), HttpResponse(status=200))
    assert sample(m, "gateway_upstream_errors_total", service="orders", reason="failed_over") == 1


def test_rate_limited_requests_are_counted_and_an_upstreams_429_is_not(fresh) -> None:
    m, _ = fresh
    refused = make_ctx(rate=RateDecision(limit=5, remaining=0, reset_s=30, allowed=False))
    metrics.observe_request(refused, gateway_error(refused, 429, ErrorCode.RATE_LIMITED))
    allowed = make_ctx(rate=RateDecision(limit=5, remaining=4, reset_s=30, allowed=True))
    metrics.observe_request(allowed, HttpResponse(b"slow down", status=429))
    assert sample(m, "gateway_rate_limited_total", service="orders") == 1


def test_a_confirmed_queue_publish_is_counted_per_queue(fresh) -> None:
    m, _ = fresh
    metrics.observe_request(make_ctx(method="POST", queue="email"), HttpResponse(status=202))
    metrics.observe_request(
        make_ctx(method="POST", queue="email"), gateway_error(make_ctx(), 503, ErrorCode.QUEUE_UNAVAILABLE)
    )
    metrics.observe_request(make_ctx(method="POST"), HttpResponse(status=202))  # an HTTP upstream's 202
    assert sample(m, "gateway_queue_published_total", queue="email") == 1
    assert sample(m, "gateway_queue_published_total", queue="sms") == 0


def test_an_idempotent_replay_is_not_counted_as_published(fresh) -> None:
    m, _ = fresh
    replay = HttpResponse(status=202)
    replay["Idempotent-Replayed"] = "true"
    metrics.observe_request(make_ctx(method="POST", queue="email"), replay)
    assert sample(m, "gateway_queue_published_total", queue="email") == 0


def test_config_version_gauge_follows_the_snapshot_served(fresh) -> None:
    m, _ = fresh
    metrics.observe_request(make_ctx(snapshot_version=7), HttpResponse())
    assert sample(m, "gateway_config_version") == 7
    metrics.observe_request(make_ctx(snapshot_version=8), HttpResponse())
    assert sample(m, "gateway_config_version") == 8


def test_metrics_endpoint_answers_prometheus_text(fresh, client) -> None:
    metrics.observe_request(make_ctx(), HttpResponse())
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert 'gateway_requests_total{method="GET",service="orders",status="200",version="v1"} 1.0' in body
    for family in (
        "gateway_request_duration_seconds",
        "gateway_upstream_errors_total",
        "gateway_rate_limited_total",
        "gateway_queue_published_total",
        "gateway_config_version",
    ):
        assert f"# TYPE {family.removesuffix('_total')}" in body


def _worker(directory: str, service: str, count: int) -> None:
    os.environ[metrics.MULTIPROC_ENV] = directory
    metrics.gateway_metrics.cache_clear()
    traffic.record = lambda *args, **kwargs: None  # type: ignore[assignment]  # no flusher in the child
    for _ in range(count):
        metrics.observe_request(make_ctx(service=service), HttpResponse())


def _collect(directory: str) -> dict[tuple[str, str], float]:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return {
        (s.name, s.labels.get("service", "")): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name in ("gateway_requests_total", "gateway_config_version")
    }


def test_processes_sharing_the_directory_are_summed_and_start_wipes_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(str(tmp_path), "orders", n)) for n in (3, 4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
        assert worker.exitcode == 0

    assert _collect(str(tmp_path))[("gateway_requests_total", "orders")] == 7
    assert _collect(str(tmp_path))[("gateway_config_version", "")] == 3

    # A dead worker's live gauge goes; its counters stay (they are the node's history).
    for worker in workers:
        metrics.child_exit(worker.pid)
    assert ("gateway_config_version", "") not in _collect(str(tmp_path))
    assert _collect(str(tmp_path))[("gateway_requests_total", "orders")] == 7

    metrics.on_starting()
    assert not list(tmp_path.glob("*.db"))
    metrics.gateway_metrics.cache_clear()


def test_importing_metrics_in_the_gunicorn_master_leaves_django_db_alone() -> None:
    """The master imports this module before gevent patches threads; django.db must come later."""
    code = "import sys, gateway_core.metrics; print('django.db' in sys.modules, 'django.http' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.split() == ["False", "False"]


def test_on_starting_without_a_directory_makes_a_private_one(monkeypatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    metrics.on_starting()
    directory = Path(os.environ[metrics.MULTIPROC_ENV])
    try:
        assert directory.is_dir()
        assert directory.name.startswith("gateway-metrics-")
    finally:
        directory.rmdir()
        monkeypatch.delenv(metrics.MULTIPROC_ENV)
        metrics.gateway_metrics.cache_clear()


def test_example_alert_rules_use_only_metrics_the_gateway_exports(fresh) -> None:
    import yaml

    m, _ = fresh
    exported = {sample.name for family in m.registry.collect() for sample in family.samples}
    exported |= {f"{family.name}_bucket" for family in m.registry.collect() if family.type == "histogram"}
    exported |= {family.name + "_total" for family in m.registry.collect() if family.type == "counter"}
    rules = yaml.safe_load((ROOT / "docs" / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in expressions for name in re.findall(r"\bgateway_[a-z_]+\b", expr)}
    assert used
    assert used <= exported, used - exported
