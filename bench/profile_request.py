"""Where one request's time goes: the gateway's steps timed in process, public and keyed side by side.

    [REDIS_URL=redis://127.0.0.1:6379/4] .venv/bin/python bench/profile_request.py [--requests 3000]

Seeds the same routes as bench/run.py on a fresh SQLite config, starts the same
upstream (nginx when installed), then, in this process under gevent as a gunicorn
worker runs, calls the gateway's WSGI application for a public and a keyed request in
turn, timing every pipeline step, the forward, and each part of ``finalize`` (headers,
metrics, access log). Prints the median microseconds per step over ``--requests``
requests of each kind, and the process CPU per request of the whole loop. Wall times
of the forward include the upstream's answer; everything else is the gateway's CPU.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 - after monkey-patching, as in a gevent worker
import io  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import free_port, seed_gateway, start_upstream, wait_ready  # noqa: E402

Timings = dict[str, list[float]]


def environ_for(path: str, headers: dict[str, str]) -> dict[str, object]:
    environ: dict[str, object] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "page=1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "4200",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:4200",
        "HTTP_ACCEPT": "*/*",
        "HTTP_USER_AGENT": "wrk",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
    }
    environ.update({f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()})
    return environ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests of each kind (default 3000)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_SETTINGS_MODULE")}
    env.update(
        SECRET_KEY="bench-only-not-a-secret",  # noqa: S106 - a throwaway benchmark database
        GATEWAY_IGNORE_DOTENV="1",
        ALLOWED_HOSTS="*",
        DATABASE_URL=f"sqlite:///{work}/bench.sqlite3",
        PYTHONPATH=str(ROOT),
    )
    port = free_port()
    upstream = start_upstream(port, env, work)
    try:
        wait_ready(f"http://127.0.0.1:{port}/")
        api_key = seed_gateway(env, f"http://127.0.0.1:{port}")
        os.environ.update(env)
        log = (work / "access.log").open("w")
        os.dup2(log.fileno(), 1)  # the access log goes to stdout, as in gunicorn; results go to stderr
        report(profile(api_key, args.requests), args.requests)
    finally:
        upstream.stop()


def profile(api_key: str, count: int) -> dict[str, Timings]:
    import gateway_project.wsgi as wsgi
    from gateway_core import logging as access_log
    from gateway_core import metrics
    from routing import pipeline

    timings: dict[str, Timings] = {"public": defaultdict(list), "keyed": defaultdict(list)}
    current: Timings = timings["public"]

    def choose(name: str, func: Callable) -> Callable:  # type: ignore[type-arg]
        def wrapper(*args: object) -> object:
            started = time.perf_counter()
            try:
                return func(*args)
            finally:
                current[name].append(time.perf_counter() - started)

        return wrapper

    pipeline.STEPS = tuple(choose(step.__name__, step) for step in pipeline.STEPS)
    pipeline.dispatch = choose("dispatch (forward, upstream wall time)", pipeline.dispatch)
    metrics.observe_request = choose("finalize: metrics", metrics.observe_request)
    access_log.log_access = choose("finalize: access log", access_log.log_access)
    kinds = {
        "public": environ_for("/api/v1/bench/items", {}),
        "keyed": environ_for("/api/v1/bench-keyed/items", {"X-API-Key": api_key}),
    }

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        if not status.startswith("200"):
            raise RuntimeError(f"the bench route answered {status}")

    cpu: dict[str, float] = {}
    for warm in (True, False):
        for _ in range(200 if warm else count):
            for kind, environ in kinds.items():
                current = timings[kind]
                environ["wsgi.input"] = io.BytesIO(b"")
                cpu_started, started = time.process_time(), time.perf_counter()
                body = wsgi.application(dict(environ), start_response)
                for _chunk in body:
                    pass
                if hasattr(body, "close"):
                    body.close()
                current["whole request (wall)"].append(time.perf_counter() - started)
                cpu[kind] = cpu.get(kind, 0.0) + time.process_time() - cpu_started
        if warm:
            timings = {"public": defaultdict(list), "keyed": defaultdict(list)}
            cpu = {}
    for kind in timings:
        timings[kind]["process CPU per request"] = [cpu[kind] / count]
    return timings


def report(timings: dict[str, Timings], count: int) -> None:
    names = list(timings["keyed"])
    out = sys.stderr
    print(f"median microseconds per step over {count} requests of each kind (load {os.getloadavg()[0]:.1f})", file=out)
    print(f"{'step':42} {'public':>8} {'keyed':>8} {'keyed-public':>13}", file=out)
    for name in names:
        public = statistics.median(timings["public"].get(name, [0.0])) * 1e6
        keyed = statistics.median(timings["keyed"][name]) * 1e6
        print(f"{name:42} {public:8.1f} {keyed:8.1f} {keyed - public:+13.1f}", file=out)


if __name__ == "__main__":
    main()
