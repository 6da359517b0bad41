"""WSGI entry point of the admin panel (port 4201)."""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.utils.functional import empty

ADMIN_SETTINGS = "admin_panel.settings"

# Set, not setdefault: the shared gunicorn config's master hooks import gateway_project,
# whose Celery app setdefaults the gateway's settings module. Worse, gevent's
# monkey.patch_all() in a fresh worker calls isinstance() on every live object, which
# makes Django's lazy settings load that module before this file runs. Until the app
# registry is populated nothing depends on them, so drop them and load ours instead.
os.environ["DJANGO_SETTINGS_MODULE"] = ADMIN_SETTINGS
if settings.configured and settings.SETTINGS_MODULE != ADMIN_SETTINGS:
    settings._wrapped = empty

application = get_wsgi_application()
