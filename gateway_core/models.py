"""Abstract base for the gateway's configuration tables: UUID ``id`` and timestamps."""

from __future__ import annotations

import uuid

from django.db import models


class TimestampedModel(models.Model):
    """A UUID primary key named ``id`` plus ``created_at``/``updated_at``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
