"""The access log's direct write (one JSON stream handler) prints exactly what the logging path prints."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from django.http import HttpResponse

from gateway_core import logging as gateway_logging
from tests.unit.test_metrics import make_ctx


@pytest.fixture
def only_a_json_stream() -> Iterator[io.StringIO]:
    """Make the access logger's only handler a JSON stream handler (as settings.LOGGING does)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(gateway_logging.AccessJsonFormatter())
    logger = gateway_logging.access_logger
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # pytest's own capture handlers are added per test phase; set the handler in the test.
    yield stream
    logger.handlers[:], logger.level, logger.propagate = saved


def _install(stream: io.StringIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(gateway_logging.AccessJsonFormatter())
    gateway_logging.access_logger.handlers[:] = [handler]


def test_the_direct_write_and_the_logging_path_print_the_same_line(
    only_a_json_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(only_a_json_stream)
    ctx = make_ctx()
    response = HttpResponse(b"twelve bytes")
    assert gateway_logging._plain_json_handler() is not None  # the direct write is taken
    monkeypatch.setattr(gateway_logging.time, "time", lambda: 1_800_000_000.25)
    gateway_logging.log_access(ctx, response)
    monkeypatch.setattr(gateway_logging, "_plain_json_handler", lambda: None)
    gateway_logging.log_access(ctx, response)
    direct, through_logging = only_a_json_stream.getvalue().splitlines()
    assert direct.split('"duration_ms":')[0] == through_logging.split('"duration_ms":')[0]
    assert direct.split(',"application_id"')[1] == through_logging.split(',"application_id"')[1]
    assert '"bytes_sent":12' in direct


def test_a_filter_or_a_second_handler_takes_the_logging_path(only_a_json_stream: io.StringIO) -> None:
    _install(only_a_json_stream)
    logger = gateway_logging.access_logger
    assert gateway_logging._plain_json_handler() is not None
    logger.addFilter(lambda record: True)
    try:
        assert gateway_logging._plain_json_handler() is None
    finally:
        logger.filters.clear()
    logger.addHandler(logging.NullHandler())
    assert gateway_logging._plain_json_handler() is None
