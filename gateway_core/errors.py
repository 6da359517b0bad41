"""The one error type of the request path and its SPEC §4 JSON rendering."""

from __future__ import annotations

import enum
import json

from django.http import HttpResponse


class ErrorCode(enum.StrEnum):
    """Every error code the gateway itself produces (SPEC §4, §5)."""

    BAD_HOST = "bad_host"
    BAD_PATH = "bad_path"
    BAD_REQUEST = "bad_request"
    ROUTE_NOT_FOUND = "route_not_found"
    VERSION_NOT_FOUND = "version_not_found"
    INVALID_API_KEY = "invalid_api_key"
    EXPIRED_API_KEY = "expired_api_key"
    MISSING_API_KEY = "missing_api_key"
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - an error code, not a secret
    EXPIRED_TOKEN = "expired_token"  # noqa: S105 - an error code, not a secret
    INSUFFICIENT_SCOPE = "insufficient_scope"
    ISSUER_UNAVAILABLE = "issuer_unavailable"
    SERVICE_NOT_ALLOWED = "service_not_allowed"
    ENDPOINT_NOT_ALLOWED = "endpoint_not_allowed"
    VERSION_NOT_ALLOWED = "version_not_allowed"
    RATE_LIMITED = "rate_limited"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    CIRCUIT_OPEN = "circuit_open"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    CORS_ORIGIN_NOT_ALLOWED = "cors_origin_not_allowed"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UPGRADE_NOT_SUPPORTED = "upgrade_not_supported"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_JSON = "invalid_json"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    TASK_NOT_FOUND = "task_not_found"
    NOT_FOUND = "not_found"
    INTERNAL_ERROR = "internal_error"


class GatewayError(Exception):
    """Stop the request with ``status`` and the SPEC error ``code``.

    ``headers`` are added to the error response (e.g. ``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def to_response(self, request_id: str) -> HttpResponse:
        """Render the SPEC JSON body with this error's status and headers."""
        response = error_response(self.status, self.code, self.message, request_id)
        for name, value in self.headers.items():
            response[name] = value
        return response


def error_response(status: int, code: ErrorCode | str, message: str, request_id: str) -> HttpResponse:
    """Return ``{"error": {"code", "message", "request_id"}}`` with ``status``."""
    body = json.dumps(
        {"error": {"code": str(code), "message": message, "request_id": request_id}}, separators=(",", ":")
    ).encode()
    response = HttpResponse(body, status=status, content_type="application/json")
    response["Content-Length"] = str(len(body))  # framed, so a refused client need not read chunks
    return response
