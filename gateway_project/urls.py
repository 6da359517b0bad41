"""URLs of the gateway process (port 4200): proxy and queue routes, ops, admin API."""

from django.urls import include, path

from gateway_core.conf import gateway_config

urlpatterns = [
    path("", include("gateway_project.ops_urls")),
    path("api/v1/tasks/", include("queues.urls")),
]
if gateway_config().admin_api_on_public_port:
    urlpatterns.append(path("admin/", include("admin_panel.api.urls")))
# Last: everything else under /api/v1 goes through the request pipeline.
urlpatterns.append(path("", include("routing.urls")))

# Any other path on port 4200 answers in the SPEC's JSON error shape, never Django's HTML pages.
handler400 = "gateway_project.edge.bad_request"
handler404 = "gateway_project.edge.not_found"
handler500 = "gateway_project.edge.server_error"
