"""/admin/schema: the admin API's OpenAPI 3 document (drf-spectacular).

The models' validators are Python functions the schema generator cannot read, so
``describe_model_rules`` (a spectacular postprocessing hook) adds the string patterns
and enums they imply. Each pattern accepts at least every value the API accepts, so
the schema never calls a valid request invalid; the models stay the judge.
"""

from __future__ import annotations

from collections.abc import Mapping

from drf_spectacular.authentication import BasicScheme
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiYamlRenderer
from drf_spectacular.views import SpectacularAPIView

from gateway_core.validators import HTTP_METHODS

_URL = r"^(https?|queue)://"
STRING_PATTERNS: Mapping[str, str] = {
    "service_name": r"^[a-z0-9][a-z0-9-]*$",
    "version": r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    "current_version": r"^$|^[A-Za-z0-9][A-Za-z0-9._-]*$",  # "" means unset
    "default_url": _URL,
    "url": _URL,
    "fallback_url": r"^$|^(https?|queue)://",
    "route_prefix": r"^$|^/api/v1(/|$)",  # "" means /api/v1/<service_name>
    "upstream_prefix": r"^$|^/",
    "endpoint_path": r"^/",
}
ITEM_PATTERNS: Mapping[str, str] = {
    "allowed_services": r"^[a-z0-9][a-z0-9-]*$",
    "allowed_versions": r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    "allowed_origins": r"^https?://",
}
ITEM_ENUMS: Mapping[str, tuple[str, ...]] = {"allowed_methods": HTTP_METHODS}


def describe_model_rules(result: dict, generator: object, request: object, public: bool) -> dict:  # type: ignore[type-arg]  # spectacular's hook signature
    """Add the patterns and enums of the models' validators to the component schemas."""
    for component in result.get("components", {}).get("schemas", {}).values():
        for name, prop in component.get("properties", {}).items():
            if prop.get("readOnly"):
                continue
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
