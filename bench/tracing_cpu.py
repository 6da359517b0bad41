"""What tracing costs in CPU per request: off, on at 100 %, on at 1 %, measured in process.

    .venv/bin/python bench/tracing_cpu.py [--requests 1024] [--slices 9] [--baseline REV]

Seeds bench/run.py's public route on a fresh SQLite config, starts its upstream and the
OTLP sink (bench/otlp_sink.py), then runs one child process per mode, in turn, round
after round. Each child is what a gunicorn gevent worker is (monkey-patched, the
gateway's WSGI application, its tracing set up from ``OTEL_*``) and calls the
application for ``--slices`` slices of ``--requests`` requests, timing each slice's
process CPU (``time.process_time``: the batch processor's exports, which run in their
own greenlet between requests, are inside the slice). CPU time is what a load on a
shared machine disturbs least, so these figures are steadier than bench/run.py's
requests per second. ``--baseline REV`` adds the gateway of an older commit.

``--ab`` compares tracing on and off inside one process: tracing is set up (1 %, then
100 %) and switched off and on again slice by slice (``tracing.ENABLED``, in the order
on, off, off, on, ...), so both sides share the process, its caches and the machine's
load of the moment; medians over the slices of each side, and the median of each on
slice's ratio to its neighbouring off slice (steadier when the machine's speed drifts).

``--callgrind`` runs the ``--ab`` loop under ``valgrind --tool=callgrind`` (phases of
``--requests`` requests, ``--slices`` each way, in the same order) and prints the
instructions per request on each side: slow, but what a shared machine's load does not
move.

``--parts`` instead times only the tracing calls one proxied request makes (server span,
client span, traceparent, ends, the access log's trace id) in a tight loop, best of
seven, per sampling ratio: the smallest figure a loaded machine can give.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if "--child" not in sys.argv:  # a child imports the gateway of its own tree (PYTHONPATH): the baseline's
    sys.path.insert(0, str(ROOT))

MODES = ("tracing off", "tracing 100 %", "tracing 1 %")


def child(requests_per_slice: int, slices: int) -> None:
    """Run in a mode's child process: print the CPU µs per request of each slice as JSON."""
    from gevent import monkey

    monkey.patch_all()
    import io
    import time

    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the access log goes to stdout, as in gunicorn
    phases = bool(os.environ.get("BENCH_TRACING_PHASES"))
    if phases:  # counted instructions: no config watcher polling the database inside a phase
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
        django.setup()
        import routing.watcher

        routing.watcher.start_watcher = lambda *args, **kwargs: None
    import gateway_project.wsgi as wsgi

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/v1/bench/items",
        "QUERY_STRING": "page=1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "4200",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:4200",
        "HTTP_ACCEPT": "*/*",
        "HTTP_USER_AGENT": "wrk",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        if not status.startswith("200"):
            raise RuntimeError(f"the bench route answered {status}")

    def one() -> None:
        body = wsgi.application({**environ, "wsgi.input": io.BytesIO(b"")}, start_response)
        for _chunk in body:
            pass
        body.close()

    for _ in range(300):  # warm-up: pools, caches
        one()
    if phases:  # under callgrind --dump-before=os_getppid: a dump ends each warm-up and each phase
        from gateway_core import tracing

        for index in range(2 * slices):
            tracing.ENABLED = index % 4 in (0, 3)
            for _ in range(100):  # this side's warm-up (counted too: an export may fall in it)
                one()
            os.getppid()
            for _ in range(requests_per_slice):
                one()
            if index == 2 * slices - 1:
                tracing.ENABLED = True
                tracing.force_flush()  # the last spans' export, inside the last phase (an "on" one)
            os.getppid()
        return
    if os.environ.get("BENCH_TRACING_AB"):
        from gateway_core import tracing

        alternating: dict[str, list[float]] = {"on": [], "off": []}
        for index in range(2 * slices):
            tracing.ENABLED = index % 4 in (0, 3)  # on, off, off, on, ...: neither side always goes first
            started = time.process_time()
            for _ in range(requests_per_slice):
                one()
            used_us = (time.process_time() - started) / requests_per_slice * 1e6
            alternating["on" if tracing.ENABLED else "off"].append(used_us)
        print(json.dumps(alternating), file=sys.stderr, flush=True)
        return
    per_request_us = []
    for _ in range(slices):
        started = time.process_time()
        for _ in range(requests_per_slice):
            one()
        per_request_us.append((time.process_time() - started) / requests_per_slice * 1e6)
    print(json.dumps(per_request_us), file=sys.stderr, flush=True)


def parts() -> None:
    """Print the CPU µs of one request's tracing calls at 1 % and 100 % sampling (export not included)."""
    import time
    import timeit

    os.environ.update(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    from gateway_core import tracing
    from gateway_core.tracing import SpanKind

    kept: list[object] = []

    class Keep:
        def on_end(self, span: object) -> None:
            if len(kept) < 4096:
                kept.append(span)

        def discard(self) -> None:
            pass

        def shutdown(self, timeout_s: float | None = None) -> None:
            pass

    for ratio in ("0.01", "1.0"):
        os.environ.update(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG=ratio)
        tracing._setup_pid, tracing._processor = 0, None
        tracing.setup()
        tracing._processor = Keep()  # type: ignore[assignment]  # the export is timed below

        def request() -> None:  # what routing/spans.py does for a proxied request
            server = tracing.start_span("GET", SpanKind.SERVER)
            if server.recording:
                server.attributes.update(
                    {
                        "http.request.method": "GET",
                        "url.scheme": "http",
                        "network.peer.address": "127.0.0.1",
                        "network.protocol.version": "1.1",
                    }
                )
            tracing.activate(server)
            if server.sampled:  # an unsampled trace has no client span: the server span's id goes upstream
                client = tracing.start_span("GET", SpanKind.CLIENT, parent=server)
                client.attributes.update(
                    {
                        "http.request.method": "GET",
                        "server.address": "127.0.0.1",
                        "server.port": 8080,
                        "url.full": "http://127.0.0.1:8080/api/v1/bench/items",
                    }
                )
                tracing.activate(client)
                client.traceparent()
                tracing.activate(server)
                client.attributes["http.response.status_code"] = 200
                client.end()
            else:
                server.traceparent()
            tracing.current_trace_id()
            if server.recording:
                server.attributes.update(
                    {
                        "url.path": "/api/v1/bench/items",
                        "http.response.status_code": 200,
                        "gateway.request.id": os.urandom(16).hex(),
                        "client.address": "127.0.0.1",
                        "http.route": "/api/v1/bench",
                        "gateway.service": "bench",
                        "gateway.service.version": "v1",
                    }
                )
                server.name = "GET /api/v1/bench"
            server.end()

        runs = timeit.repeat(request, number=20000, repeat=7, timer=time.process_time)
        print(
            f"tracing calls of one request at {float(ratio):.0%} sampling: {min(runs) / 20000 * 1e6:.1f} us CPU"
            f"  (load average {_load()})"
        )
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from gateway_core.tracing.otlp import ExportRequestEncoder

    batch = kept[:512]  # one default batch: 256 requests' server and client spans
    resource = tracing._resource
    readable = [span.readable(resource) for span in batch]  # type: ignore[attr-defined]  # tracing.Span records
    ours = min(
        timeit.repeat(
            lambda: ExportRequestEncoder(resource, tracing.SCOPE).encode(batch),
            number=20,
            repeat=7,
            timer=time.process_time,
        )
    )
    official = min(
        timeit.repeat(lambda: encode_spans(readable).SerializeToString(), number=20, repeat=7, timer=time.process_time)
    )
    per_request = 2 / len(batch) / 20 * 1e6
    print(f"encoding a request's two spans: {ours * per_request:.1f} us CPU", end="")
    print(f" (the official encoder: {official * per_request:.1f} us)")
    from bench.run import PYTHON, free_port
    from gateway_core.tracing.otlp import SpanExporter

    port = free_port()
    sink = subprocess.Popen([PYTHON, str(ROOT / "bench" / "otlp_sink.py"), str(port)])
    try:
        exporter = SpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", resource=resource, scope=tracing.SCOPE)
        time.sleep(1.0)  # the sink is listening
        exported = min(timeit.repeat(lambda: exporter.export(batch), number=20, repeat=7, timer=time.process_time))
        posted = {}
        for size in (512, 2048):  # the POST alone: its cost hardly depends on the batch's size
            body = ExportRequestEncoder(resource, tracing.SCOPE).encode(kept[-size:])
            runs = timeit.repeat(
                lambda body=body: exporter._client.export(body), number=5, repeat=5, timer=time.process_time
            )
            posted[size] = min(runs) / 5
    finally:
        sink.terminate()
        sink.wait()
    print(f"exporting them (encode + HTTP POST of a 512-span batch): {exported * per_request:.1f} us CPU per request")
    for size, seconds in posted.items():
        print(
            f"  the HTTP POST alone, {size}-span batches: {seconds * 1e3:.2f} ms each,"
            f" {seconds * 2 / size * 1e6:.1f} us per request"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1024, help="requests per slice (default 1024)")
    parser.add_argument("--slices", type=int, default=9, help="slices per mode and round (default 9)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of turns (default 3)")
    parser.add_argument("--baseline", metavar="REV", help="also measure the gateway of commit REV (git archive)")
    parser.add_argument("--parts", action="store_true", help="time only the tracing calls of one request")
    parser.add_argument("--ab", action="store_true", help="tracing on and off in turn within one process")
    parser.add_argument("--callgrind", action="store_true", help="instructions per request, on and off (valgrind)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parts:
        parts()
        return
    if args.child:
        child(args.requests, args.slices)
        return

    from bench import tracing_targets
    from bench.run import PYTHON, Process, free_port, seed_gateway, start, start_upstream, wait_ready

    work = Path(tempfile.mkdtemp(prefix="gateway-tracing-cpu-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_SETTINGS_MODULE", "OTEL_"))}
    env.update(
        SECRET_KEY="bench-only-not-a-secret",  # noqa: S106 - a throwaway benchmark database
        GATEWAY_IGNORE_DOTENV="1",
        ALLOWED_HOSTS="*",
        DATABASE_URL=f"sqlite:///{work}/bench.sqlite3",
        PYTHONPATH=str(ROOT),
    )
    env.pop("REDIS_URL", None)  # the in-process counter, as bench/run.py without Redis
    upstream_port, sink_port = free_port(), free_port()
    processes: list[Process] = []
    sink = f"http://127.0.0.1:{sink_port}"
    modes: dict[str, tuple[dict[str, str], Path]] = {
        "tracing off": (env, ROOT),
        "tracing 100 %": ({**env, **tracing_targets.tracing_env(sink, 1.0)}, ROOT),
        "tracing 1 %": ({**env, **tracing_targets.tracing_env(sink, 0.01)}, ROOT),
    }
    if args.baseline:
        baseline_dir = tracing_targets.extract_baseline(ROOT, args.baseline, work)
        modes = {f"baseline {args.baseline}": ({**env, "PYTHONPATH": str(baseline_dir)}, baseline_dir), **modes}
    results: dict[str, list[float]] = {name: [] for name in modes}
    try:
        processes.append(start_upstream(upstream_port, env, work))
        processes.append(start("otlp-sink", [PYTHON, "bench/otlp_sink.py", str(sink_port)], env, work))
        wait_ready(f"http://127.0.0.1:{upstream_port}/")
        seed_gateway(env, f"http://127.0.0.1:{upstream_port}")
        if args.callgrind:
            runs = [(name, *modes[name]) for name in ("tracing 1 %", "tracing 100 %")]
            if args.baseline:  # the same ratios in the older tree
                tree = modes[f"baseline {args.baseline}"][1]
                runs += [
                    (f"{name} at {args.baseline}", {**env_, "PYTHONPATH": str(tree)}, tree) for name, env_, _ in runs
                ]
            callgrind(runs, work, args.requests, args.slices)
            return
        if args.ab:
            slices = args.slices * args.rounds
            print(f"tracing on and off in turn in one process ({slices} slices each of {args.requests}):")
            for name in ("tracing 1 %", "tracing 100 %"):
                cmd = [PYTHON, str(Path(__file__)), "--child", "--requests", str(args.requests)]
                cmd += ["--slices", str(args.slices * args.rounds)]
                ab_env = {**modes[name][0], "BENCH_TRACING_AB": "1"}
                done = subprocess.run(cmd, cwd=ROOT, env=ab_env, capture_output=True, text=True, check=True)
                got = json.loads(done.stderr.strip().splitlines()[-1])
                on, off = statistics.median(got["on"]), statistics.median(got["off"])
                # Each on slice against the off slice next to it: a machine whose speed drifts
                # (other processes, the host) moves both alike.
                paired = statistics.median(b / a for a, b in zip(got["on"], got["off"], strict=True))
                print(
                    f"  {name}: on {on:.1f} us, off {off:.1f} us, +{on - off:.1f} us, off/on {off / on:.3f}x,"
                    f" paired slices {paired:.3f}x  (load average {_load()})"
                )
            return
        for _ in range(args.rounds):
            for name, (mode_env, tree) in modes.items():
                cmd = [PYTHON, str(Path(__file__)), "--child", "--requests", str(args.requests)]
                cmd += ["--slices", str(args.slices)]
                done = subprocess.run(cmd, cwd=tree, env=mode_env, capture_output=True, text=True, check=True)
                results[name].extend(json.loads(done.stderr.strip().splitlines()[-1]))
    finally:
        for process in reversed(processes):
            process.stop()

    reference_name = next(iter(modes))
    reference = statistics.median(results[reference_name])
    print(f"CPU per public request, in process ({args.rounds} rounds x {args.slices} slices of {args.requests}):")
    print(f"{'mode':24} {'median us':>10} {'best us':>8} {'vs ' + reference_name:>22}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:24} {median:10.1f} {min(values):8.1f} {reference / median:21.3f}x")
    print(f"\nload average {_load()}; logs in {work}")


def callgrind(runs: list[tuple[str, dict[str, str], Path]], work: Path, requests: int, slices: int) -> None:
    """Print the instructions per request with tracing on and off, counted by callgrind in one process per ratio."""
    import shutil

    from bench.run import PYTHON

    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--callgrind needs valgrind")
    print(f"instructions per request, tracing on and off in turn in one process ({slices} phases each of {requests}):")
    for number, (name, run_env, tree) in enumerate(runs):
        out = work / f"callgrind.{number}.out"
        cmd = [valgrind, "--tool=callgrind", "--dump-before=os_getppid", f"--callgrind-out-file={out}"]
        cmd += [PYTHON, str(Path(__file__)), "--child", "--requests", str(requests), "--slices", str(slices)]
        # Only full batches are exported, as under load: valgrind's slowness would let the delay fire.
        env = {**run_env, "BENCH_TRACING_PHASES": "1", "OTEL_BSP_SCHEDULE_DELAY": "100000000"}
        subprocess.run(cmd, cwd=tree, env=env, capture_output=True, check=True)
        sides: dict[str, list[float]] = {"on": [], "off": []}
        for index in range(2 * slices):  # dump 2k+1 is phase k's warm-up (the first also start-up), 2k+2 the phase
            total = sum(_summary(Path(f"{out}.{dump}")) for dump in (2 * index + 1, 2 * index + 2) if dump > 1)
            sides["on" if index % 4 in (0, 3) else "off"].append(total / (requests + (100 if index else 0)))
        on, off = statistics.median(sides["on"]), statistics.median(sides["off"])
        print(
            f"  {name}: on {on / 1000:.1f} k, off {off / 1000:.1f} k, +{(on - off) / 1000:.1f} k,"
            f" off/on {off / on:.3f}x"
            f"  (off phases {min(sides['off']) / 1000:.1f}-{max(sides['off']) / 1000:.1f} k)"
        )


def _summary(dump: Path) -> int:
    return int(next(line for line in dump.read_text().splitlines() if line.startswith("summary:")).split()[1])


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
