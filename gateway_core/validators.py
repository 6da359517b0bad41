"""Field validators shared by the five configuration models (SPEC §3).

The models call these from their fields and ``clean()``, so the admin UI, the admin
API and config imports all refuse the same input with the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

from gateway_core.conf import QUEUE_NAMES

SERVICE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*\Z")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# "default" names default_url in the X-Service-Version response header.
RESERVED_VERSIONS = frozenset({"default"})
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Paths the gateway serves itself; a service route may not shadow them.
RESERVED_ROUTE_PREFIXES = ("/api/v1/tasks",)
_PATH_SEGMENT_RE = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@%]+\Z")


def validate_service_name(value: str) -> None:
    """Refuse a service name outside ``[a-z0-9][a-z0-9-]*``."""
    if not SERVICE_NAME_RE.match(value or ""):
        raise ValidationError(
            "Use lower-case letters, digits and '-', starting with a letter or digit.",
            code="invalid_service_name",
        )


def validate_version_name(value: str) -> None:
    """Refuse a version name that is not a short token such as ``v2``."""
    if not VERSION_RE.match(value or "") or len(value) > 32:
        raise ValidationError(
            "Use up to 32 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. v2).",
            code="invalid_version",
        )
    if value in RESERVED_VERSIONS:
        raise ValidationError(f"'{value}' is reserved.", code="reserved_version")


def validate_upstream_url(value: str) -> None:
    """Accept ``http(s)://host[:port][/path]`` or ``queue://<one of the five queues>``."""
    if value.startswith("queue://"):
        name = value[len("queue://") :]
        if name not in QUEUE_NAMES:
            raise ValidationError(
                f"Unknown queue '{name}'; use one of: {', '.join(QUEUE_NAMES)}.",
                code="invalid_queue",
            )
        return
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValidationError("Enter a valid URL.", code="invalid_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            "Use an http:// or https:// URL with a host, or queue://<queue>.",
            code="invalid_url_scheme",
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValidationError(
            "An upstream URL carries no query, fragment or credentials.",
            code="invalid_url",
        )
    if any(seg in (".", "..") for seg in parts.path.split("/")):
        raise ValidationError("The URL path may not contain '.' or '..' segments.", code="invalid_url")


def validate_path_prefix(value: str) -> None:
    """Refuse a path prefix that is not ``/``-rooted, clean and without a trailing slash."""
    if not value.startswith("/"):
        raise ValidationError("A path prefix starts with '/'.", code="invalid_prefix")
    if value == "/":
        return
    if value.endswith("/"):
        raise ValidationError("A path prefix does not end with '/'.", code="invalid_prefix")
    for segment in value[1:].split("/"):
        if segment in ("", ".", ".."):
            raise ValidationError("A path prefix has no empty, '.' or '..' segments.", code="invalid_prefix")
        if not _PATH_SEGMENT_RE.match(segment):
            raise ValidationError(f"Invalid character in path segment '{segment}'.", code="invalid_prefix")


def validate_route_prefix(value: str) -> None:
    """Refuse a public route prefix outside ``/api/v1`` or over a built-in path."""
    validate_path_prefix(value)
    if value != "/api/v1" and not value.startswith("/api/v1/"):
        raise ValidationError("A route prefix is /api/v1 or starts with /api/v1/.", code="invalid_prefix")
    for reserved in RESERVED_ROUTE_PREFIXES:
        if value == reserved or value.startswith(reserved + "/"):
            raise ValidationError(f"{reserved} is served by the gateway itself.", code="reserved_prefix")


def validate_origin(value: str) -> None:
    """Accept a browser origin such as ``https://app.example.com[:8443]``."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValidationError(f"'{value}' is not an origin.", code="invalid_origin") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username
        or value != value.strip()
    ):
        raise ValidationError(
            f"'{value}' is not an origin: use scheme://host[:port] with no path.",
            code="invalid_origin",
        )


def validate_http_method(value: str) -> None:
    """Accept one of the upper-case methods the gateway routes."""
    if value not in HTTP_METHODS:
        raise ValidationError(
            f"'{value}' is not an upper-case HTTP method ({', '.join(HTTP_METHODS)}).",
            code="invalid_method",
        )


@deconstructible
class StringListValidator:
    """Validate a JSON list of unique strings, each checked by the validator named ``item``."""

    def __init__(self, item: str) -> None:
        self.item = item

    def __call__(self, value: object) -> None:
        check: Callable[[str], None] = globals()[self.item]
        if not isinstance(value, list):
            raise ValidationError("Enter a JSON list of strings.", code="not_a_list")
        errors: list[ValidationError] = []
        # Counted from 1: "Item 1" is the first line of the admin's text box, as people count.
        for index, element in enumerate(value, start=1):
            if not isinstance(element, str):
                errors.append(ValidationError(f"Item {index}: not a string.", code="not_a_string"))
                continue
            try:
                check(element)
            except ValidationError as exc:
                errors.extend(ValidationError(f"Item {index}: {m}", code=exc.code) for m in exc.messages)
        if len(set(map(str, value))) != len(value):
            errors.append(ValidationError("Items must be unique.", code="duplicate_item"))
        if errors:
            raise ValidationError(errors)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StringListValidator) and other.item == self.item

    def __hash__(self) -> int:
        return hash(self.item)


validate_service_list = StringListValidator("validate_service_name")
validate_version_list = StringListValidator("validate_version_name")
validate_origin_list = StringListValidator("validate_origin")
validate_method_list = StringListValidator("validate_http_method")
