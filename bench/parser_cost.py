"""What one upstream exchange's HTTP/1.1 work costs: routing/http1.py against h11 on the same bytes.

    .venv/bin/python bench/parser_cost.py [--exchanges 20000]

The request head the gateway sends for bench/run.py's public route and the answer
nginx gives it (nine headers, a 2-byte body) are framed and parsed in process, best of
seven loops of ``--exchanges``: by ``routing.http1`` (``request_head``, ``read_answer``
on a socket stand-in that hands over the answer in one ``recv``, ``body_in_buffer``),
and by h11, the state machine httpcore builds on (a client ``Connection``: ``send`` of
the request and its end, ``receive_data``, ``next_event`` until the answer's end). No
network: only what each side's Python does with the bytes. The difference, set against
the gateway's CPU per request from ``bench/run.py``, is what replacing the parser would
cost every proxied request.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import h11

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing.http1 import read_answer, request_head

TARGET = "/items?page=1"
REQUEST_HEADERS = [
    ("Host", "127.0.0.1:8000"),
    ("User-Agent", "wrk"),
    ("Accept", "*/*"),
    ("X-Request-ID", "5f0c6f0e2b7e4c1d9a3e8f6b2d1c0a99"),
    ("X-Forwarded-For", "127.0.0.1"),
    ("X-Forwarded-Proto", "http"),
    ("X-Forwarded-Host", "127.0.0.1:4200"),
    ("X-Service-Key", "bench-service-key"),
]
ANSWER = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Thu, 03 Dec 2026 18:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 2\r\n"
    b"Connection: keep-alive\r\n"
    b"Cache-Control: no-store\r\n"
    b"X-Upstream: bench\r\n"
    b"Vary: Accept-Encoding\r\n"
    b'ETag: "6756f1a0-2"\r\n'
    b"\r\n"
    b"{}"
)


class OneRecv:
    """A socket stand-in: the whole answer on the first ``recv``."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, size: int) -> bytes:
        data, self.data = self.data, b""
        return data


def gateway_exchange() -> bytes:
    request_head("GET", TARGET, REQUEST_HEADERS)
    answer = read_answer(OneRecv(ANSWER), "GET")  # type: ignore[arg-type]  # recv is all it calls
    body = answer.body_in_buffer
    assert body == b"{}" and answer.reusable  # noqa: S101 - a benchmark's sanity check
    return body


def h11_exchange() -> bytes:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target=TARGET, headers=REQUEST_HEADERS))
    conn.send(h11.EndOfMessage())
    conn.receive_data(ANSWER)
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        elif event is h11.NEED_DATA:
            raise RuntimeError("h11 wants more data")
    assert body == b"{}"  # noqa: S101 - a benchmark's sanity check
    return body


def best_us(exchange: object, count: int) -> float:
    best = float("inf")
    for _ in range(7):
        started = time.process_time()
        for _ in range(count):
            exchange()  # type: ignore[operator]
        best = min(best, (time.process_time() - started) / count * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=20_000, help="exchanges per loop (default 20000)")
    args = parser.parse_args()
    ours, theirs = best_us(gateway_exchange, args.exchanges), best_us(h11_exchange, args.exchanges)
    print(f"one exchange's HTTP/1.1 work, best of 7 x {args.exchanges} (h11 {h11.__version__}):")
    print(f"  routing/http1.py  {ours:6.1f} us CPU")
    print(f"  h11               {theirs:6.1f} us CPU  (+{theirs - ours:.1f} us, {theirs / ours:.1f}x)")


if __name__ == "__main__":
    main()
