"""/metrics of a live gunicorn with several workers: every worker's requests, one answer."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.support.builders import make_app, make_public_app, make_service
from tests.support.upstream import EchoUpstream, closed_port_url

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Return every sample of ``/metrics`` keyed by (name, labels)."""
    response = requests.get(url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        match = SAMPLE.match(line)
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
            samples[(match["name"], labels)] = float(match["value"])
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_of_every_worker_are_counted_once_in_one_scrape(
    gateway_server, echo_upstream: EchoUpstream, tmp_path: Path
) -> None:
    make_service("orders", echo_upstream.url)
    make_public_app("/api/v1/orders/*")
    metrics_dir = tmp_path / "metrics"
    gateway = gateway_server(workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})

    def call(i: int) -> int:
        # A fresh connection per request, so both workers take some of them.
        return requests.get(
            gateway.url + f"/api/v1/orders/{i}", timeout=10, headers={"Connection": "close"}
        ).status_code

    # Which worker accepts a connection is up to the kernel: send batches until both have served.
    sent = 0
    pids: set[str] = set()
    with ThreadPoolExecutor(max_workers=8) as pool:
        while len(pids) < 2 and sent < 800:
            statuses = list(pool.map(call, range(sent, sent + 40)))
            assert statuses == [200] * 40
            sent += 40
            pids = {p.stem.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}
    assert len(echo_upstream.received) == sent
    assert len(pids) == 2, f"expected both workers to serve requests, files: {sorted(metrics_dir.iterdir())}"
    for _ in range(6):  # whichever worker answers the scrape reports the node's total
        samples = scrape(gateway.url)
        labels = {"service": "orders", "version": "default", "method": "GET", "status": "200"}
        assert value(samples, "gateway_requests_total", **labels) == sent
        assert value(samples, "gateway_request_duration_seconds_count", service="orders", version="default") == sent
        assert value(samples, "gateway_config_version") >= 1


def test_errors_rate_limits_and_route_misses_are_counted_with_bounded_labels(
    gateway_server, echo_upstream: EchoUpstream
) -> None:
    make_service("orders", echo_upstream.url)
    make_service("broken", closed_port_url())
    make_public_app("/api/v1/broken/*")
    make_app("limited", entries=[{"path": "/api/v1/orders/*", "is_public": True, "rate_limit": 2}])
    gateway = gateway_server(workers=1)  # one worker: the limit is per process without Redis

    statuses = [requests.get(gateway.url + "/api/v1/orders/x", timeout=10).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert requests.get(gateway.url + "/api/v1/broken/y", timeout=10).status_code == 502
    for n in range(3):  # random paths must not become label values
        assert requests.get(gateway.url + f"/api/v1/nowhere-{n}", timeout=10).status_code == 404
    assert requests.request("BREW", gateway.url + "/api/v1/orders/x", timeout=10).status_code == 429

    samples = scrape(gateway.url)
    assert value(samples, "gateway_rate_limited_total", service="orders") == 2
    assert value(samples, "gateway_upstream_errors_total", service="broken", reason="unavailable") == 1
    assert value(samples, "gateway_requests_total", service="", version="", method="GET", status="404") == 3
    assert value(samples, "gateway_requests_total", service="orders", version="default", method="OTHER", status="429")
    assert value(samples, "gateway_queue_published_total", queue="email") == 0
    label_values = {v for (_, labels) in samples for _, v in labels}
    assert not any("nowhere" in v or v.startswith("/") for v in label_values)
    assert len(echo_upstream.received) == 2  # the refused ones never reached the upstream


def test_a_published_queue_message_is_counted_per_queue(gateway_server) -> None:
    make_service("mailer", "queue://email")
    make_public_app("/api/v1/mailer/*")
    gateway = gateway_server(workers=1)

    response = requests.post(
        gateway.url + "/api/v1/mailer/send", json={"to": "a@example.com", "subject": "s", "text": "t"}, timeout=10
    )

    assert response.status_code == 202, response.text
    samples = scrape(gateway.url)
    assert value(samples, "gateway_queue_published_total", queue="email") == 1
    assert value(samples, "gateway_queue_published_total", queue="sms") == 0


def test_an_exited_workers_live_gauge_is_dropped_and_its_counts_kept(
    gateway_server, echo_upstream: EchoUpstream, tmp_path: Path
) -> None:
    make_service("orders", echo_upstream.url)
    make_public_app("/api/v1/orders/*")
    metrics_dir = tmp_path / "metrics"
    gateway = gateway_server(workers=1, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    assert requests.get(gateway.url + "/api/v1/orders/1", timeout=10).status_code == 200
    (gauge,) = metrics_dir.glob("gauge_livemax_*.db")
    worker_pid = int(gauge.stem.rsplit("_", 1)[-1])

    os.kill(worker_pid, signal.SIGTERM)  # gunicorn starts another worker and calls child_exit
    deadline = time.monotonic() + 15
    while gauge.exists() and time.monotonic() < deadline:
        time.sleep(0.1)

    assert not gauge.exists()
    assert any(metrics_dir.glob(f"counter_{worker_pid}.db"))
    samples = scrape(gateway.url)  # served by the new worker
    labels = {"service": "orders", "version": "default", "method": "GET", "status": "200"}
    assert value(samples, "gateway_requests_total", **labels) == 1
