"""/admin/schema: the admin API's OpenAPI 3 document (drf-spectacular)."""

from __future__ import annotations

from drf_spectacular.authentication import BasicScheme
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiYamlRenderer
from drf_spectacular.views import SpectacularAPIView


class ThrottledBasicScheme(BasicScheme):
    """Document the login-throttled Basic authentication as plain HTTP Basic."""

    target_class = "admin_panel.auth.ThrottledBasicAuthentication"


class SchemaView(SpectacularAPIView):
    """Serve the schema to staff users: JSON, or YAML when asked (``Accept`` or ``?format=yaml``)."""

    renderer_classes = [OpenApiJsonRenderer, OpenApiYamlRenderer]
