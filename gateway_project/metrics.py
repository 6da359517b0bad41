"""Prometheus metrics, multiprocess-safe across gunicorn workers (SPEC §8). Interim."""

from __future__ import annotations

from django.http import HttpResponse

from routing.context import RequestContext


def observe_request(ctx: RequestContext, response: HttpResponse) -> None:
    """Count and time one finished request."""


def on_starting() -> None:
    """gunicorn master start: prepare a clean multiprocess directory."""


def child_exit(pid: int) -> None:
    """gunicorn worker exit: drop the worker's live gauges."""
