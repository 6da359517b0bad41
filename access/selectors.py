"""Reads of access data for the admin API and the config export."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from access.models import ApiKey, Application, EndpointWhitelist


def application_list() -> QuerySet[Application]:
    """Return every application, by name."""
    return Application.objects.order_by("name")


def application_get(application_id: str) -> Application | None:
    """Return the application with id ``application_id``; None when unknown or not a UUID."""
    pk = _uuid(application_id)
    return None if pk is None else Application.objects.filter(pk=pk).first()


def whitelist_entry_list(application: Application) -> QuerySet[EndpointWhitelist]:
    """Return the whitelist entries of ``application``, by path."""
    return EndpointWhitelist.objects.filter(application=application).order_by("endpoint_path")


def whitelist_entry_get(application: Application, entry_id: str) -> EndpointWhitelist | None:
    """Return entry ``entry_id`` of ``application``; None when unknown, another's, or not a UUID."""
    pk = _uuid(entry_id)
    return None if pk is None else EndpointWhitelist.objects.filter(application=application, pk=pk).first()


def api_key_list(application: Application) -> QuerySet[ApiKey]:
    """Return the API keys of ``application`` (hashes are in the rows: never render them)."""
    return ApiKey.objects.filter(application=application).order_by("created_at", "name")


def api_key_get(application: Application, key_id: str) -> ApiKey | None:
    """Return key ``key_id`` of ``application``; None when unknown, another's, or not a UUID."""
    pk = _uuid(key_id)
    return None if pk is None else ApiKey.objects.filter(application=application, pk=pk).first()


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
