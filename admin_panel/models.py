"""The config history: one numbered revision per committed config change (SPEC §7 "Revisions")."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Revision(models.Model):
    """The whole config document (the export's shape, no key hashes) after one committed change."""

    number = models.PositiveBigIntegerField(primary_key=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept apart from ``user`` so the history still names a user who was deleted since.
    username = models.CharField(max_length=150, blank=True, default="")
    summary = models.CharField(max_length=500, blank=True, default="")
    rollback_of = models.PositiveBigIntegerField(null=True, blank=True, help_text="The revision rolled back to.")
    document = models.JSONField()

    class Meta:
        db_table = "gateway_config_history"
        ordering = ["-number"]
        verbose_name = "config revision"
        verbose_name_plural = "config history"

    def __str__(self) -> str:
        return f"revision {self.number}"
