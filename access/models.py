"""Applications, their endpoint whitelists and their API keys (SPEC §3)."""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models

from gateway_core.models import TimestampedModel
from gateway_core.patterns import validate_endpoint_pattern
from gateway_core.validators import (
    validate_method_list,
    validate_origin_list,
    validate_service_list,
    validate_version_list,
)


class Application(TimestampedModel):
    """A client application: what it may call and from which browser origins."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    allowed_services = models.JSONField(
        default=list, blank=True, validators=[validate_service_list], help_text="Service names; empty: all."
    )
    allowed_versions = models.JSONField(
        default=list, blank=True, validators=[validate_version_list], help_text="Versions; empty: all."
    )
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_origin_list],
        help_text="Browser origins such as https://app.example.com; empty: no cross-origin use.",
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        db_table = "gateway_application"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class EndpointWhitelist(TimestampedModel):
    """One path pattern an application may call, with its methods, versions and rate limit."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="whitelist")
    endpoint_path = models.CharField(
        max_length=255,
        validators=[validate_endpoint_pattern],
        help_text="Exact path, {name} for one segment, or a trailing /* for a subtree.",
    )
    allowed_methods = models.JSONField(
        default=list, blank=True, validators=[validate_method_list], help_text="Upper-case methods; empty: all."
    )
    allowed_versions = models.JSONField(
        default=list, blank=True, validators=[validate_version_list], help_text="Versions; empty: all."
    )
    rate_limit = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Requests per minute; empty: unlimited."
    )
    is_public = models.BooleanField(default=False, help_text="Open to callers without a key.")

    class Meta:
        db_table = "gateway_endpoint_whitelist"
        ordering = ["application__name", "endpoint_path"]
        verbose_name = "endpoint whitelist entry"
        verbose_name_plural = "endpoint whitelist"
        constraints = [
            models.UniqueConstraint(fields=["application", "endpoint_path"], name="uniq_app_endpoint"),
        ]

    def __str__(self) -> str:
        return self.endpoint_path


class ApiKey(TimestampedModel):
    """An application's API key: public prefix plus the argon2id hash of its secret."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    key_prefix = models.CharField(max_length=32, unique=True, editable=False)
    api_key_hash = models.CharField(max_length=255, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        db_table = "gateway_api_key"
        ordering = ["application__name", "name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix})"
