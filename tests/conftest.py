"""Shared fixtures: echo upstreams and live gunicorn gateways on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.servers import GunicornProcess, base_env
from tests.support.upstream import EchoUpstream, free_port


@pytest.fixture
def echo_upstream() -> Iterator[EchoUpstream]:
    """A loopback HTTP server that records every request and echoes it back as JSON."""
    upstream = EchoUpstream()
    yield upstream
    upstream.close()


@pytest.fixture
def gateway_server(
    transactional_db: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., GunicornProcess]]:
    """Start real gunicorn gateways on free ports against the test database.

    Call it as ``gateway_server(workers=2, env={...}, app=...)``; every process
    started is stopped at teardown. Data must be committed (transactional tests),
    so the child processes see it.
    """
    started: list[GunicornProcess] = []

    def start(
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        app: str = "gateway_project.wsgi:application",
        args: list[str] | None = None,
        ready_path: str = "/healthz",
    ) -> GunicornProcess:
        log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
        proc = GunicornProcess(
            app=app,
            port=free_port(),
            log_path=log,
            env=base_env(WEB_CONCURRENCY=str(workers), **(env or {})),
            args=args or [],
        )
        started.append(proc)
        return proc.start(ready_path=ready_path)

    yield start
    for proc in started:
        proc.stop()
