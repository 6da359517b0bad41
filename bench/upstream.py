"""A fast keep-alive HTTP/1.1 upstream for the benchmark: gevent sockets, a fixed small answer.

Used when nginx is not installed. ``python bench/upstream.py PORT [DELAY_S]``.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402 - after monkey-patching
import time  # noqa: E402

from gevent.server import StreamServer  # noqa: E402

BODY = b'{"ok":true,"service":"bench","items":[1,2,3,4,5,6,7,8]}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


def serve(sock, address) -> None:  # type: ignore[no-untyped-def]  # gevent's callback signature
    buffer = b""
    delay_s = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    while True:
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            if not data:
                sock.close()
                return
            buffer += data
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
                while len(buffer) < length:
                    buffer += sock.recv(65536)
                buffer = buffer[length:]
        if delay_s:
            time.sleep(delay_s)
        sock.sendall(RESPONSE)


if __name__ == "__main__":
    StreamServer(("127.0.0.1", int(sys.argv[1])), serve, backlog=2048).serve_forever()
