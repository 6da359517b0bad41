"""URLs of the admin panel process (port 4201): Django admin UI and the admin REST API."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("", include("gateway_project.ops_urls")),
    # The REST API's paths (/admin/routing/services, ...) come before the admin's catch-all.
    path("admin/", include("admin_panel.api.urls")),
    path("admin/dashboard/", include("admin_panel.dashboard_urls")),
    path("admin/", admin.site.urls),
]
