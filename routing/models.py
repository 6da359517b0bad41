"""Service configs and service versions: where each public route goes (SPEC §3)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from gateway_core.models import TimestampedModel
from gateway_core.validators import (
    validate_path_prefix,
    validate_route_prefix,
    validate_service_name,
    validate_upstream_url,
    validate_version_name,
)

URL_HELP = "http(s)://host[:port][/path] of an upstream, or queue://<email|sms|ai|analytics|execution>."


class ServiceConfig(TimestampedModel):
    """A routed service: its public prefix, default upstream and routing options."""

    service_name = models.CharField(max_length=63, unique=True, validators=[validate_service_name])
    default_url = models.CharField(max_length=500, validators=[validate_upstream_url], help_text=URL_HELP)
    current_version = models.CharField(
        max_length=32,
        null=True,
        blank=True,
        validators=[validate_version_name],
        help_text="Version served when no weighted version applies (falls back to the default URL).",
    )
    fallback_url = models.CharField(
        max_length=500,
        null=True,
        blank=True,
        validators=[validate_upstream_url],
        help_text="Tried once when the upstream cannot be reached. " + URL_HELP,
    )
    is_active = models.BooleanField(default=True)
    route_prefix = models.CharField(
        max_length=255,
        unique=True,
        blank=True,
        validators=[validate_route_prefix],
        help_text="Public path prefix; empty means /api/v1/<service_name>.",
    )
    upstream_prefix = models.CharField(
        max_length=255,
        null=True,
        blank=True,
        help_text="Upstream path prefix replacing the route prefix. Unset: same as the route "
        "prefix; empty string: strip the prefix.",
    )
    timeout_ms = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(3_600_000)],
        help_text="Upstream read timeout in milliseconds (unset: GATEWAY_UPSTREAM_TIMEOUT_MS).",
    )

    class Meta:
        db_table = "gateway_service_config"
        ordering = ["service_name"]
        verbose_name = "service"

    def __str__(self) -> str:
        return self.service_name

    def clean(self) -> None:
        """Fill the default route prefix and check the upstream prefix."""
        if not self.route_prefix and self.service_name:
            self.route_prefix = f"/api/v1/{self.service_name}"
        if self.upstream_prefix:
            try:
                validate_path_prefix(self.upstream_prefix)
            except ValidationError as exc:
                raise ValidationError({"upstream_prefix": exc.messages}) from None

    def save(self, *args: object, **kwargs: object) -> None:
        if not self.route_prefix and self.service_name:
            self.route_prefix = f"/api/v1/{self.service_name}"
        super().save(*args, **kwargs)  # type: ignore[arg-type]  # Django's save signature


class ServiceVersion(TimestampedModel):
    """One deployable version of a service, chosen by pin or by weight."""

    service = models.ForeignKey(ServiceConfig, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=32, validators=[validate_version_name])
    url = models.CharField(max_length=500, validators=[validate_upstream_url], help_text=URL_HELP)
    weight = models.IntegerField(
        default=100,
        validators=[MinValueValidator(0), MaxValueValidator(1000)],
        help_text="Relative share of unpinned traffic, 0-1000 (0: only when pinned).",
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        db_table = "gateway_service_version"
        ordering = ["service__service_name", "version"]
        constraints = [
            models.UniqueConstraint(fields=["service", "version"], name="uniq_service_version"),
        ]

    def __str__(self) -> str:
        return f"{self.service_id and self.service.service_name}:{self.version}"
