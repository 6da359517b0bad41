"""A minimal OTLP/HTTP collector stand-in for benchmarks: accept ``POST /v1/traces``, answer 200, keep nothing.

    .venv/bin/python bench/otlp_sink.py PORT

It reads each request body and answers with an empty ``ExportTraceServiceResponse``
(zero bytes), so the gateway's exporter does all of its real work (encode, send, wait
for the answer) while the sink itself costs next to nothing on the shared machine.
Requests and bytes received are printed when it stops (SIGTERM).
"""

from __future__ import annotations

import asyncio
import signal
import sys

received = {"requests": 0, "bytes": 0}
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            received["requests"] += 1
            received["bytes"] += length
            writer.write(ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass  # the client went away, or the sink is stopping
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    print(f"otlp sink: {received['requests']} export requests, {received['bytes']} bytes", flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
