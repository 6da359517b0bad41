"""Access log and log formatters (gateway_core/logging.py)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from django.http import HttpResponse, StreamingHttpResponse

from gateway_core import logging as gateway_logging
from gateway_core.snapshot import CompiledApplication
from tests.unit.test_metrics import make_ctx

SECRET_KEY = "gwk_abcdef.s3cr3t-part-of-the-key-that-must-never-be-logged"


def capture(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    """Send the access logger's output, formatted by ``formatter``, to a string buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = gateway_logging.access_logger
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield stream
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    yield from capture(gateway_logging.AccessJsonFormatter())


@pytest.fixture
def text_lines() -> Iterator[io.StringIO]:
    yield from capture(gateway_logging.AccessTextFormatter())


@pytest.fixture(params=["json", "text"])
def any_lines(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    formatter = gateway_logging.AccessJsonFormatter if request.param == "json" else gateway_logging.AccessTextFormatter
    yield from capture(formatter())


def application() -> CompiledApplication:
    return CompiledApplication(
        id="0b7c6f9e-0000-4000-8000-000000000001",
        name="shop",
        allowed_services=frozenset(),
        allowed_versions=frozenset(),
        allowed_origins=frozenset(),
        entries=(),
    )


def test_access_line_has_exactly_the_spec_keys(json_lines: io.StringIO) -> None:
    ctx = make_ctx(method="POST", application=application(), upstream="http://127.0.0.1:7000")
    gateway_logging.log_access(ctx, HttpResponse(b"hello", status=201))

    (line,) = json_lines.getvalue().splitlines()
    record = json.loads(line)
    assert tuple(record) == gateway_logging.ACCESS_FIELDS
    assert record["request_id"] == "req-1"
    assert record["method"] == "POST"
    assert record["path"] == "/api/v1/orders/1"
    assert record["service"] == "orders"
    assert record["version"] == "v1"
    assert record["status"] == 201
    assert record["duration_ms"] >= 50
    assert record["application_id"] == "0b7c6f9e-0000-4000-8000-000000000001"
    assert record["upstream"] == "http://127.0.0.1:7000"
    assert record["bytes_sent"] == 5
    assert record["ts"].endswith("Z")


def test_access_line_never_holds_a_key_header_query_or_upstream_password(any_lines: io.StringIO) -> None:
    stream = any_lines
    ctx = make_ctx(
        path=f"/api/v1/orders/1?api_key={SECRET_KEY}",
        headers={"X-API-Key": SECRET_KEY, "Authorization": f"Bearer {SECRET_KEY}"},
        upstream="https://svc:upstream-password@10.0.0.5:8443/base",
    )
    gateway_logging.log_access(ctx, HttpResponse(status=200))
    text = stream.getvalue()
    assert text.strip()
    assert "s3cr3t" not in text
    assert "gwk_abcdef" not in text
    assert "upstream-password" not in text
    assert "https://10.0.0.5:8443/base" in text


def test_unrouted_request_logs_nulls_not_guesses(json_lines: io.StringIO) -> None:
    ctx = make_ctx(service=None, path="/api/v1/nothing")
    gateway_logging.log_access(ctx, HttpResponse(status=404))
    record = json.loads(json_lines.getvalue())
    assert (record["service"], record["version"], record["application_id"], record["upstream"]) == (
        None,
        None,
        None,
        None,
    )


def test_streamed_body_is_logged_once_when_closed_with_the_bytes_sent(json_lines: io.StringIO) -> None:
    response = StreamingHttpResponse(iter([b"abc", b"defgh"]))
    gateway_logging.log_access(make_ctx(), response)
    assert json_lines.getvalue() == ""  # not yet: the body has not gone out

    assert b"".join(response) == b"abcdefgh"
    response.close()
    response.close()
    (line,) = json_lines.getvalue().splitlines()
    assert json.loads(line)["bytes_sent"] == 8


def test_streamed_body_never_iterated_is_still_logged_on_close(json_lines: io.StringIO) -> None:
    response = StreamingHttpResponse(iter([b"abc"]))
    gateway_logging.log_access(make_ctx(method="HEAD"), response)
    response.close()
    assert json.loads(json_lines.getvalue())["bytes_sent"] == 0


def test_text_access_line_reads_as_method_path_status(text_lines: io.StringIO) -> None:
    gateway_logging.log_access(make_ctx(), HttpResponse(b"ok"))
    line = text_lines.getvalue().strip()
    assert " GET /api/v1/orders/1 200 " in line
    assert "service=orders version=v1 application_id=- " in line
    assert line.endswith("request_id=req-1")


def test_json_error_log_names_the_exception_type_without_traceback() -> None:
    formatter = gateway_logging.JsonFormatter()
    try:
        raise ValueError(f"bad input {SECRET_KEY}")
    except ValueError:
        record = logging.LogRecord("gateway", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    record.service = "orders"
    payload = json.loads(formatter.format(record))
    assert payload == {
        "ts": payload["ts"],
        "level": "ERROR",
        "logger": "gateway",
        "message": "failed",
        "service": "orders",
        "exc_type": "ValueError",
    }


def test_text_formatter_writes_one_readable_line() -> None:
    record = logging.LogRecord("gateway.reload", logging.WARNING, __file__, 1, "reload %s", ("failed",), None)
    line = gateway_logging.TextFormatter().format(record)
    assert line.endswith(" WARNING gateway.reload: reload failed")
    assert "\n" not in line


def test_access_logger_is_silent_when_disabled(json_lines: io.StringIO) -> None:
    gateway_logging.access_logger.setLevel(logging.CRITICAL)
    gateway_logging.log_access(make_ctx(), HttpResponse())
    assert json_lines.getvalue() == ""


def test_settings_route_the_access_logger_to_its_own_formatter() -> None:
    from django.conf import settings

    assert settings.LOGGING["loggers"]["gateway.access"]["handlers"] == ["access"]
    assert settings.LOGGING["handlers"]["access"]["formatter"] == f"access_{settings.LOG_FORMAT}"
