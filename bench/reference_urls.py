"""Views of the two reference proxies: bare Django + requests, and django-revproxy."""

from __future__ import annotations

import requests
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import re_path

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}

session = requests.Session()
session.trust_env = False
session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=256))


def forward(request: HttpRequest, rest: str) -> HttpResponse:
    """The classic forwarding view: copy method, path, query, headers and body; return the answer."""
    headers = {
        key[5:].replace("_", "-").title(): value
        for key, value in request.META.items()
        if key.startswith("HTTP_") and key[5:].replace("_", "-").lower() not in HOP_BY_HOP | {"host"}
    }
    upstream = session.request(
        request.method,
        settings.BENCH_UPSTREAM + request.path,
        params=request.GET,
        data=request.body or None,
        headers=headers,
        allow_redirects=False,
        timeout=(5, 30),
    )
    response = HttpResponse(upstream.content, status=upstream.status_code)
    for name, value in upstream.headers.items():
        if name.lower() not in HOP_BY_HOP | {"content-length", "content-encoding"}:
            response[name] = value
    return response


urlpatterns = [re_path(r"^api/v1/bench/(?P<rest>.*)$", forward)]

try:
    from revproxy.views import ProxyView

    urlpatterns.append(
        re_path(r"^revproxy/(?P<path>.*)$", ProxyView.as_view(upstream=settings.BENCH_UPSTREAM + "/revproxy/"))
    )
except ImportError:  # bench/requirements.txt not installed: that reference is skipped
    pass
