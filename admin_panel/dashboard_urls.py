"""URLs of the traffic dashboard in the admin (staff only, like every admin page)."""

from django.contrib import admin
from django.urls import path

from admin_panel import dashboard

urlpatterns = [
    path("", admin.site.admin_view(dashboard.dashboard_view), name="admin_dashboard"),
    path("data", admin.site.admin_view(dashboard.dashboard_data), name="admin_dashboard_data"),
]
