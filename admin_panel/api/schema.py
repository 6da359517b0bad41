"""/admin/schema: the admin API's OpenAPI 3 document (drf-spectacular).

The models' validators are Python functions the schema generator cannot read, so
``describe_model_rules`` (a spectacular postprocessing hook) states their rules in the
schema: string patterns (a URL has a host and no credentials, query or fragment; an
origin has no path; a path has no empty, '.' or '..' segments), enums, and a
description of what no pattern can say (an expiry in the future). A generated client
then refuses what the server refuses; the models stay the judge.
"""

from __future__ import annotations

from collections.abc import Mapping

from drf_spectacular.authentication import BasicScheme
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiYamlRenderer
from drf_spectacular.views import SpectacularAPIView

from gateway_core.validators import HTTP_METHODS, QUEUE_NAMES

# Pieces of the patterns, mirroring gateway_core/validators.py and gateway_core/patterns.py.
_SCHEME = "[hH][tT][tT][pP][sS]?://"
_HOST = r"(?:[^/?#@:\s\[\]]+|\[[0-9A-Fa-f:.]+\])"
_PORT = r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?"
_NOT_DOTS = r"(?!\.\.?(?:/|$))"  # a segment is never "." or ".."
_URL_PATH = rf"(?:/{_NOT_DOTS}[^/?#\s]*)*"
_QUEUE = rf"queue://(?:{'|'.join(QUEUE_NAMES)})"
_URL = rf"^(?:{_SCHEME}{_HOST}{_PORT}{_URL_PATH}|{_QUEUE})$"
_PREFIX_SEGMENT = rf"/{_NOT_DOTS}[A-Za-z0-9\-._~!$&'()*+,;=:@%]+"
_ENDPOINT_SEGMENT = rf"{_NOT_DOTS}(?:\{{[A-Za-z_][A-Za-z0-9_]*\}}|[A-Za-z0-9\-._~!$&'()+,;=:@]+)"
_VERSION = r"^(?!default$)[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"  # "default" names the default URL

STRING_PATTERNS: Mapping[str, str] = {
    "service_name": r"^[a-z0-9][a-z0-9-]*$",
    "version": _VERSION,
    "current_version": rf"^$|{_VERSION}",  # "" means unset
    "default_url": _URL,
    "url": _URL,
    "fallback_url": rf"^$|{_URL}",
    # "" means /api/v1/<service_name>; /api/v1/tasks is the gateway's own.
    "route_prefix": rf"^$|^(?!/api/v1/tasks(?:/|$))/api/v1(?:{_PREFIX_SEGMENT})*$",
    "upstream_prefix": rf"^$|^/$|^(?:{_PREFIX_SEGMENT})+$",
    "endpoint_path": rf"^/(?:/?\*|{_ENDPOINT_SEGMENT}(?:/{_ENDPOINT_SEGMENT})*(?:/\*)?)?$",
}
ITEM_PATTERNS: Mapping[str, str] = {
    "allowed_services": r"^[a-z0-9][a-z0-9-]*$",
    "allowed_versions": _VERSION,
    "allowed_origins": rf"^{_SCHEME}{_HOST}{_PORT}$",
}
ITEM_ENUMS: Mapping[str, tuple[str, ...]] = {"allowed_methods": HTTP_METHODS}
# Rules no JSON Schema keyword states, said in words.
DESCRIPTIONS: Mapping[str, str] = {
    "expires_at": "An ISO 8601 date-time in the future (a past expiry is refused); null: never expires.",
    "default_url": "http(s)://host[:port][/path] without credentials, query or fragment, or queue://<queue>.",
    "url": "http(s)://host[:port][/path] without credentials, query or fragment, or queue://<queue>.",
    "allowed_origins": "Browser origins scheme://host[:port], no path; empty: no cross-origin use.",
    "endpoint_path": (
        "Exact path, {name} for one segment, or a trailing /* for a subtree; no empty, '.' or '..' segments."
    ),
}


def describe_model_rules(result: dict, generator: object, request: object, public: bool) -> dict:  # type: ignore[type-arg]  # spectacular's hook signature
    """Add the patterns and enums of the models' validators to the component schemas."""
    for component in result.get("components", {}).get("schemas", {}).values():
        for name, prop in component.get("properties", {}).items():
            if prop.get("readOnly"):
                continue
            if name in DESCRIPTIONS and not prop.get("description"):
                prop["description"] = DESCRIPTIONS[name]
            if name in STRING_PATTERNS and prop.get("type") == "string":
                prop["pattern"] = STRING_PATTERNS[name]
            items = prop.get("items") if prop.get("type") == "array" else None
            if items is not None and items.get("type") == "string":
                if name in ITEM_ENUMS:
                    items["enum"] = list(ITEM_ENUMS[name])
                elif name in ITEM_PATTERNS:
                    items["pattern"] = ITEM_PATTERNS[name]
    return result


class ThrottledBasicScheme(BasicScheme):
    """Document the login-throttled Basic authentication as plain HTTP Basic."""

    target_class = "admin_panel.auth.ThrottledBasicAuthentication"


class SchemaView(SpectacularAPIView):
    """Serve the schema to staff users: JSON, or YAML when asked (``Accept`` or ``?format=yaml``)."""

    renderer_classes = [OpenApiJsonRenderer, OpenApiYamlRenderer]
