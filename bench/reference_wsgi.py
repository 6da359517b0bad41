"""WSGI entry of the reference proxies (bench only)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.reference_settings")
application = get_wsgi_application()
