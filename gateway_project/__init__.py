"""The gateway's Django project: settings, URLs, WSGI and the Celery app."""

from gateway_project.celery import app as celery_app

__all__ = ("celery_app",)
