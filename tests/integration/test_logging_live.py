"""The access log of a live gateway: one line per request on stdout, never a secret."""

from __future__ import annotations

import json
import time

import requests

from gateway_core.logging import ACCESS_FIELDS
from tests.support.builders import make_app, make_key, make_public_app, make_service
from tests.support.upstream import EchoUpstream


def access_lines(log: str) -> list[dict[str, object]]:
    lines = []
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if "bytes_sent" in record:
                lines.append(record)
    return lines


def wait_for_lines(gateway, count: int, timeout_s: float = 5.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = access_lines(gateway.log())
        if len(lines) >= count:
            return lines
        time.sleep(0.1)
    return access_lines(gateway.log())


def test_one_json_line_per_request_with_the_spec_fields_and_no_secret(
    gateway_server, echo_upstream: EchoUpstream
) -> None:
    make_service("orders", echo_upstream.url, versions=[("v2", echo_upstream.url)])
    app = make_app("shop", entries=[{"path": "/api/v1/orders/*"}])
    _, plaintext = make_key(app)
    prefix, secret = plaintext.split(".", 1)
    gateway = gateway_server(workers=2)

    sent = []
    for i in range(4):
        request_id = f"log-test-{i}"
        response = requests.post(
            gateway.url + f"/api/v1/orders/{i}?api_key={plaintext}&page=2",
            data=b"x" * 10,
            headers={"X-API-Key": plaintext, "Authorization": f"Bearer {plaintext}", "X-Request-ID": request_id},
            timeout=10,
        )
        assert response.status_code == 200
        sent.append((request_id, len(response.content)))
    refused = requests.get(gateway.url + "/api/v1/orders/9", headers={"X-API-Key": prefix + ".wrong"}, timeout=10)
    assert refused.status_code == 401

    # What the upstream received carried the key's effects, not the key.
    assert all(r.header("X-API-Key") is None for r in echo_upstream.received)
    lines = wait_for_lines(gateway, 5)
    assert len(lines) == 5
    by_id = {line["request_id"]: line for line in lines}
    for request_id, size in sent:
        line = by_id[request_id]
        assert tuple(line) == ACCESS_FIELDS
        assert line["method"] == "POST"
        assert line["path"] == f"/api/v1/orders/{request_id[-1]}"
        assert (line["service"], line["version"], line["status"]) == ("orders", "v2", 200)
        assert line["application_id"] == str(app.id)
        assert line["upstream"] == echo_upstream.url
        assert line["bytes_sent"] == size
        assert isinstance(line["duration_ms"], float)
    refused_line = by_id[refused.headers["X-Request-ID"]]
    assert (refused_line["status"], refused_line["application_id"]) == (401, None)

    log = gateway.log()
    assert secret not in log
    assert plaintext not in log
    assert "Bearer" not in log
    assert "api_key=" not in log


def test_text_format_comes_from_the_environment_and_the_access_log_ignores_the_app_level(
    gateway_server, echo_upstream: EchoUpstream
) -> None:
    make_service("orders", echo_upstream.url)
    make_public_app("/api/v1/orders/*")
    gateway = gateway_server(env={"GATEWAY_LOG_FORMAT": "text", "GATEWAY_LOG_LEVEL": "WARNING"})

    response = requests.get(gateway.url + "/api/v1/orders/7", headers={"X-Request-ID": "text-line-1"}, timeout=10)
    assert response.status_code == 200

    deadline = time.monotonic() + 5
    while "request_id=text-line-1" not in gateway.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    (line,) = [line for line in gateway.log().splitlines() if "request_id=text-line-1" in line]
    assert " GET /api/v1/orders/7 200 " in line
    assert "service=orders version=default application_id=- " in line
    assert not any(line.startswith("{") for line in gateway.log().splitlines())


def test_access_log_can_be_switched_off(gateway_server, echo_upstream: EchoUpstream) -> None:
    make_service("orders", echo_upstream.url)
    make_public_app("/api/v1/orders/*")
    gateway = gateway_server(env={"GATEWAY_ACCESS_LOG": "false"})

    assert requests.get(gateway.url + "/api/v1/orders/7", timeout=10).status_code == 200
    time.sleep(0.5)
    assert echo_upstream.received
    assert access_lines(gateway.log()) == []
