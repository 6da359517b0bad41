"""The /api/v1/... view for requests that come through Django's URLconf (the WSGI fast path
in gateway_project/wsgi.py normally serves them without it)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from routing.pipeline import handle


@csrf_exempt
def gateway_view(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Run the request through the gateway pipeline."""
    return handle(request)
