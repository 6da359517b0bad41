"""The catch-all /api/v1/... route into the request pipeline."""

from django.urls import path, re_path

from routing.views import gateway_view

urlpatterns = [
    path("api/v1", gateway_view, name="gateway-root"),
    re_path(r"^api/v1/(?P<rest>.*)\Z", gateway_view, name="gateway"),
]
