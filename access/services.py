"""Writes to access data: creating and revoking API keys."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from access.keys import key_generate
from access.models import ApiKey, Application


@transaction.atomic
def api_key_create(*, application: Application, name: str, expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """Create a key for ``application``; return it with the plaintext, shown only this once."""
    new = key_generate()
    key = ApiKey(
        application=application,
        name=name,
        key_prefix=new.prefix,
        api_key_hash=new.hash,
        expires_at=expires_at,
    )
    key.full_clean()
    key.save()
    return key, new.plaintext


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Mark ``key`` inactive; it is kept for audit and stops working on the next reload."""
    if key.is_active:
        key.is_active = False
        key.save(update_fields=["is_active", "updated_at"])
    return key
