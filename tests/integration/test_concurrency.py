"""200 concurrent requests to a 1 s upstream, while another route stays fast (issue 3, item 6)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.support.builders import make_public_app, make_service
from tests.support.upstream import EchoUpstream

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CONCURRENCY = 200
UPSTREAM_DELAY_S = 1.0


class SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        time.sleep(UPSTREAM_DELAY_S)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


class SlowServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # all 200 connections arrive at once


@pytest.fixture
def slow_upstream() -> Iterator[str]:
    server = SlowServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_200_concurrent_slow_requests_complete_together_and_a_fast_route_stays_fast(
    gateway_server, slow_upstream: str, echo_upstream: EchoUpstream
) -> None:
    make_service("slow", slow_upstream)
    make_service("fast", echo_upstream.url)
    make_public_app()
    gw = gateway_server(workers=2)

    def run(url: str) -> tuple[list[tuple[int, float]], float, float]:
        """Send CONCURRENCY requests at once; return results, wall time and the fast route's latency."""

        def call(_: int) -> tuple[int, float]:
            started = time.monotonic()
            response = requests.get(url, timeout=15)
            return response.status_code, time.monotonic() - started

        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            started = time.monotonic()
            futures = [pool.submit(call, i) for i in range(CONCURRENCY)]
            time.sleep(0.5)  # the slow requests are in flight now
            fast_started = time.monotonic()
            assert requests.get(gw.url + "/api/v1/fast/ping", timeout=5).status_code == 200
            fast_s = time.monotonic() - fast_started
            results = [f.result() for f in futures]
        return results, time.monotonic() - started, fast_s

    def percentiles(results: list[tuple[int, float]]) -> tuple[float, float]:
        latencies = sorted(seconds for _, seconds in results)
        return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1]

    # The same client against the upstream directly: what this machine can do right now.
    direct, direct_wall_s, _ = run(slow_upstream + "/x")
    results, wall_s, fast_s = run(gw.url + "/api/v1/slow/x")
    (p50, p99), (direct_p50, direct_p99) = percentiles(results), percentiles(direct)
    print(
        f"\n{CONCURRENCY} concurrent x {UPSTREAM_DELAY_S:.0f} s upstream through the gateway: wall {wall_s:.2f} s, "
        f"p50 {p50:.2f} s, p99 {p99:.2f} s (direct: wall {direct_wall_s:.2f} s, p50 {direct_p50:.2f} s, "
        f"p99 {direct_p99:.2f} s); fast route meanwhile {fast_s * 1000:.0f} ms"
    )
    assert [status for status, _ in direct] == [200] * CONCURRENCY
    assert [status for status, _ in results] == [200] * CONCURRENCY
    assert fast_s < 0.5
    # Target: p99 <= 1.5 s on an idle machine. Blocking workers would take 100 s (2 x 1 s at a
    # time); the margin over the direct run absorbs a loaded, shared CI box.
    assert p99 < direct_p99 + 1.0
    assert wall_s < 5.0
