"""The tracing rows of bench/run.py: the same gateway with tracing off, on at 100 % and on at 1 %.

Tracing "on" exports over OTLP/HTTP to ``bench/otlp_sink.py`` on loopback, with the
SDK's default batching (a batch every 5 s or every 512 spans). With ``--baseline REV``
the gateway of an older commit (``git archive REV``, same virtualenv, same settings)
runs beside them, so "tracing off" is compared with the code before tracing existed in
the same run.
"""

from __future__ import annotations

import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

TRACING_OFF = "gateway (all steps)"  # run.py's own gateway row: tracing is off by default
TRACING_ALL = "gateway, tracing 100 %"
TRACING_ONE = "gateway, tracing 1 %"
BASELINE = "gateway at baseline"


def tracing_env(sink_url: str, ratio: float) -> dict[str, str]:
    """Return the OTEL_* variables that trace ``ratio`` of new traces to the sink."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(ratio),
        "OTEL_SERVICE_NAME": "bench-gateway",
    }


def extract_baseline(root: Path, rev: str, into: Path) -> Path:
    """Write the tree of ``rev`` under ``into`` (``git archive``); return its folder."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=root, capture_output=True, check=True)
    target = into / "baseline"
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


def print_ratios(results: dict[str, object], baseline_rev: str | None) -> None:
    """Print the tracing cost ratios (same run) with their targets."""
    rps = {name: result.requests_per_s for name, result in results.items()}  # type: ignore[attr-defined]  # LoadResult
    if TRACING_ALL not in rps:
        return
    reference_name = BASELINE if BASELINE in rps else TRACING_OFF
    reference = rps[reference_name]
    label = f"baseline {baseline_rev}" if reference_name == BASELINE else "tracing off"
    print(f"\ntracing cost (same run; reference: {label}, {reference:.0f} req/s):")
    if reference_name == BASELINE:
        print(f"  tracing off / baseline:  {rps[TRACING_OFF] / reference:.3f}x (target >= 0.98)")
    print(f"  tracing 100 % / {label}: {rps[TRACING_ALL] / reference:.3f}x (target >= 0.85)")
    print(f"  tracing 1 % / {label}:   {rps[TRACING_ONE] / reference:.3f}x (target >= 0.97)")
