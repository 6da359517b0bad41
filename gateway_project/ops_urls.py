"""URLs for /healthz, /readyz and /metrics, served by the gateway and the admin panel."""

from django.urls import path

from gateway_project import ops

urlpatterns = [
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics_view, name="metrics"),
]
