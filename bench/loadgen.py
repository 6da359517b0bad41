"""A small keep-alive HTTP/1.1 load generator, used when ``wrk`` is not installed.

Opens ``connections`` asyncio connections, each sending GETs back to back for
``duration_s``; returns requests/s and latency percentiles. Python is slower than wrk,
so its figures are lower bounds; ratios from one run stay comparable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


async def _worker(host: str, port: int, request: bytes, deadline: float, latencies: list[float]) -> int:
    errors = 0
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 2"):
                errors += 1
    finally:
        writer.close()
    return errors


async def _run(url: str, connections: int, duration_s: float, headers: Mapping[str, str]) -> LoadResult:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: */*\r\n{extra}\r\n".encode()
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + duration_s
    errors = await asyncio.gather(
        *(
            _worker(parts.hostname or "127.0.0.1", parts.port or 80, request, deadline, latencies)
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    count = len(latencies)
    return LoadResult(
        requests_per_s=count / elapsed,
        p50_ms=latencies[count // 2] * 1000 if count else 0.0,
        p99_ms=latencies[min(count - 1, int(count * 0.99))] * 1000 if count else 0.0,
        errors=sum(errors),
    )


def run_load(url: str, connections: int, duration_s: float, headers: Mapping[str, str] | None = None) -> LoadResult:
    """Load ``url`` with ``connections`` keep-alive connections for ``duration_s``, sending ``headers``."""
    return asyncio.run(_run(url, connections, duration_s, headers or {}))
