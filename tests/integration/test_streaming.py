"""Bodies stream both ways with bounded worker memory (SPEC §4.7; issue target: RSS growth ≤ 64 MiB)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.support.builders import make_public_app, make_service

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MiB = 1024 * 1024
# 96 MiB in the suite; GATEWAY_TEST_STREAM_MIB=1024 measures the 1 GiB case on demand.
TRANSFER_BYTES = int(os.environ.get("GATEWAY_TEST_STREAM_MIB", "96")) * MiB
BLOCK = b"0123456789abcdef" * 4096  # 64 KiB, not compressible away by anything in between
MAX_GROWTH_BYTES = 32 * MiB  # a buffered body would grow the worker by the whole 96 MiB


class BulkHandler(BaseHTTPRequestHandler):
    """GET: stream TRANSFER_BYTES (chunked). POST: drain the body, answer its size and a checksum."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for _ in range(TRANSFER_BYTES // len(BLOCK)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the warm-up reader hangs up early

    def do_POST(self) -> None:
        remaining, total = int(self.headers.get("Content-Length", "0")), 0
        while remaining:
            data = self.rfile.read(min(remaining, 1 << 16))
            if not data:
                break
            total += len(data)
            remaining -= len(data)
        body = str(total).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def bulk_upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BulkHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """Sample a process's RSS every 20 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def streaming_gateway(gateway_server, bulk_upstream: str, tmp_path: Path) -> Callable[[], tuple[str, int]]:
    make_service("bulk", bulk_upstream)
    make_public_app()
    gw = gateway_server(workers=1, app="tests.support.probe_wsgi:application", env={"PROBE_DIR": str(tmp_path)})

    def warm() -> tuple[str, int]:
        response = requests.post(gw.url + "/api/v1/bulk/warm", data=b"x" * 100_000, timeout=10)
        assert response.status_code == 200
        with requests.get(gw.url + "/api/v1/bulk/warm", stream=True, timeout=10) as down:
            for _ in down.iter_content(1 << 20):
                break
        return gw.url, int(response.headers["X-Probe-Worker"])

    return warm


def test_a_large_download_streams_with_bounded_worker_memory(streaming_gateway) -> None:
    url, worker = streaming_gateway()
    baseline = rss_bytes(worker)
    received = 0
    with PeakRss(worker) as rss, requests.get(url + "/api/v1/bulk/file", stream=True, timeout=30) as response:
        assert response.status_code == 200
        for block in response.iter_content(1 << 16):
            received += len(block)
            time.sleep(0)  # a reader slower than the upstream
    growth = rss.peak - baseline
    print(f"\ndownload {received / MiB:.0f} MiB: worker RSS growth {growth / MiB:.1f} MiB")
    assert received == TRANSFER_BYTES
    assert growth < MAX_GROWTH_BYTES


def test_a_large_upload_streams_with_bounded_worker_memory(gateway_server, bulk_upstream, tmp_path) -> None:
    make_service("bulk", bulk_upstream)
    make_public_app()
    gw = gateway_server(
        workers=1,
        app="tests.support.probe_wsgi:application",
        env={"PROBE_DIR": str(tmp_path), "GATEWAY_MAX_BODY_BYTES": str(TRANSFER_BYTES * 2)},
    )
    warm = requests.post(gw.url + "/api/v1/bulk/warm", data=b"x" * 100_000, timeout=10)
    worker = int(warm.headers["X-Probe-Worker"])
    baseline = rss_bytes(worker)

    class Body:
        """A file-like body of TRANSFER_BYTES with a known length (sent with Content-Length)."""

        def __init__(self) -> None:
            self.left = TRANSFER_BYTES

        def __len__(self) -> int:
            return self.left

        def read(self, size: int = -1) -> bytes:
            if self.left <= 0:
                return b""
            self.left -= len(BLOCK)
            return BLOCK

    with PeakRss(worker) as rss:
        response = requests.post(gw.url + "/api/v1/bulk/upload", data=Body(), timeout=60)
    growth = rss.peak - baseline
    print(f"\nupload {TRANSFER_BYTES / MiB:.0f} MiB: worker RSS growth {growth / MiB:.1f} MiB")
    assert response.status_code == 200
    assert int(response.text) == TRANSFER_BYTES
    assert growth < MAX_GROWTH_BYTES
