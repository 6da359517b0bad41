"""URLs for /healthz, /readyz and /metrics."""

from django.urls import path

from gateway_project import ops

urlpatterns = [
    path("healthz", ops.healthz, name="healthz"),
]
