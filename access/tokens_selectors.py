"""Reads of token issuers for the admin API (writes are in ``access.services``)."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from access.models import Application, TokenIssuer


def token_issuer_list(application: Application) -> QuerySet[TokenIssuer]:
    """Return the token issuers of ``application``, by ``iss``."""
    return TokenIssuer.objects.filter(application=application).order_by("issuer")


def token_issuer_get(application: Application, issuer_id: str) -> TokenIssuer | None:
    """Return issuer ``issuer_id`` of ``application``; None when unknown, another's, or not a UUID."""
    try:
        pk = uuid.UUID(str(issuer_id))
    except ValueError:
        return None
    return TokenIssuer.objects.filter(application=application, pk=pk).first()
