"""URLs of the admin panel process (port 4201): Django admin UI and the admin REST API."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from admin_panel.auth import admin_login

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("", include("gateway_project.ops_urls")),
    # The REST API's paths (/admin/routing/services, ...) come before the admin's catch-all.
    path("admin/", include("admin_panel.api.urls")),
    path("admin/dashboard/", include("admin_panel.dashboard_urls")),
    # The admin's login with failed attempts limited per client IP; same URL as admin:login.
    path("admin/login/", admin_login, name="admin_login"),
    path("admin/", admin.site.urls),
]
