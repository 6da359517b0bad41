"""The admin API's OpenAPI schema, fuzzed by schemathesis against a live gunicorn.

Schemathesis reads /admin/schema and sends generated requests, valid and invalid,
to every operation; the run fails on any 5xx, an undocumented status code, a
response that breaks its schema, an invalid request that is accepted, or a request
that succeeds without credentials. Bounded by ``--max-time`` and ``--max-examples``.
``positive_data_acceptance`` is left out on purpose: the models accept only some
schema-valid strings (a URL must be http(s):// or queue://<name>, a service name
``[a-z0-9][a-z0-9-]*``), and those rules live in the models, not in the schema.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests
from rest_framework.authtoken.models import Token

from tests.support.admin_api import make_user
from tests.support.builders import make_app, make_entry, make_key, make_service

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MAX_TIME_S = 30


def test_schema_is_openapi_3_with_every_spec_path(gateway_server) -> None:
    make_user("ops")
    server = gateway_server(app="admin_panel.wsgi:application")
    schema = requests.get(server.url + "/admin/schema", auth=("ops", "correct-horse-battery-staple-9"), timeout=10)
    assert schema.status_code == 200
    document = schema.json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/admin/routing/services",
        "/admin/routing/services/{service_name}",
        "/admin/routing/services/{service_name}/versions",
        "/admin/routing/services/{service_name}/versions/{version}",
        "/admin/access/applications",
        "/admin/access/applications/{id}",
        "/admin/access/applications/{id}/whitelist",
        "/admin/access/applications/{id}/whitelist/{entry_id}",
        "/admin/access/applications/{id}/api-keys",
        "/admin/access/applications/{id}/api-keys/{key_id}",
        "/admin/access/applications/{id}/token-issuers",
        "/admin/access/applications/{id}/token-issuers/{issuer_id}",
        "/admin/cache",
        "/admin/cache/refresh",
        "/admin/queues",
        "/admin/config/export",
        "/admin/config/import",
        "/admin/config/revisions",
        "/admin/config/revisions/{number}",
        "/admin/config/revisions/{number}/rollback",
    }
    assert {"basicAuth", "tokenAuth"} <= set(document["components"]["securitySchemes"])


def schemathesis_run(
    schema_url: str, token: str, cwd: Path, *, max_time_s: int, config: Path | None = None, extra: tuple[str, ...] = ()
) -> str:
    """Run schemathesis against ``schema_url``; fail the test with its report unless it passes."""
    command = [
        SCHEMATHESIS,
        *(["--config-file", str(config)] if config else []),
        "run",
        schema_url,
        "--header",
        f"Authorization: Token {token}",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "5",
        "--max-time",
        str(max_time_s),
        # One worker: CPython 3.11's ast.parse is not thread-safe, and hypothesis parses
        # lambda sources while it generates ("AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--seed",
        "20261126",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
        *extra,
    ]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=max_time_s + 60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-12000:]
    assert "passed" in output
    return output


def test_schemathesis_finds_no_server_error_and_no_schema_violation(gateway_server, tmp_path) -> None:
    user = make_user("fuzzer")
    token = Token.objects.create(user=user).key  # a token: Basic would run argon2 on every request
    make_service("billing", "http://127.0.0.1:9", versions=[("v1", "http://127.0.0.1:9")])
    app = make_app("web")
    entry = make_entry(app, "/api/v1/billing/*")
    key, _ = make_key(app)
    # Existing objects for the path parameters, so detail operations reach past the 404.
    config = tmp_path / "existing-objects.toml"  # not schemathesis.toml: that name is loaded by default
    config.write_text(
        "[parameters]\n"
        '"path.service_name" = "billing"\n'
        '"path.version" = "v1"\n'
        f'"path.id" = "{app.id}"\n'
        f'"path.entry_id" = "{entry.id}"\n'
        f'"path.key_id" = "{key.id}"\n'
    )
    # The ignored_auth check sends wrong credentials on purpose: no lockout here.
    server = gateway_server(app="admin_panel.wsgi:application", env={"GATEWAY_ADMIN_LOGIN_MAX_FAILURES": "0"})
    schema_url = server.url + "/admin/schema"
    try:
        # Every operation, on existing objects.
        schemathesis_run(schema_url, token, tmp_path, max_time_s=MAX_TIME_S * 2 // 3, config=config)
        # The detail operations again, with generated path parameters (unknown ids, odd characters).
        schemathesis_run(schema_url, token, tmp_path, max_time_s=MAX_TIME_S // 3, extra=("--include-path-regex", r"\{"))
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n--- gunicorn ---\n{server.log()[-4000:]}") from None
