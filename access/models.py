"""Applications, their endpoint whitelists, their API keys and their token issuers (SPEC §3)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from access.tokens_validation import (
    RATE_LIMIT_BY,
    issuer_errors,
    validate_algorithm_list,
    validate_audience_list,
    validate_claim_name,
    validate_env_name,
    validate_issuer_url,
    validate_scope_list,
)
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
    rate_limit_by = models.CharField(
        max_length=16,
        choices=[(value, value) for value in RATE_LIMIT_BY],
        default="application",
        help_text="Count the rate limit per application, or per user (token subject) for bearer-token callers.",
    )
    required_scopes = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_scope_list],
        help_text="Scopes a bearer-token caller must all hold; empty: none.",
    )

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


class TokenIssuer(TimestampedModel):
    """Who may sign end users' bearer tokens for an application, and how to check them.

    Exactly one source of trust: a JWKS URL (public keys), the name of an environment
    variable holding an HS secret (never the secret itself), or an RFC 7662
    introspection URL for opaque tokens.
    """

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="token_issuers")
    issuer = models.CharField(max_length=255, unique=True, help_text="The tokens' iss claim.")
    jwks_url = models.CharField(
        max_length=500,
        null=True,
        blank=True,
        validators=[validate_issuer_url],
        help_text="https URL of the issuer's JWKS (http only on loopback).",
    )
    secret_env = models.CharField(
        max_length=128,
        null=True,
        blank=True,
        validators=[validate_env_name],
        help_text="Name of the environment variable holding the HS256/384/512 secret.",
    )
    introspection_url = models.CharField(
        max_length=500,
        null=True,
        blank=True,
        validators=[validate_issuer_url],
        help_text="RFC 7662 endpoint for opaque tokens (client credentials from the environment).",
    )
    audiences = models.JSONField(
        default=list, blank=True, validators=[validate_audience_list], help_text="Accepted aud values; empty: any."
    )
    algorithms = models.JSONField(
        default=list, blank=True, validators=[validate_algorithm_list], help_text="e.g. RS256, ES256; never none."
    )
    user_claim = models.CharField(max_length=64, default="sub", validators=[validate_claim_name])
    scope_claim = models.CharField(
        max_length=64,
        default="scope",
        validators=[validate_claim_name],
        help_text="Space-separated string or list; scp is accepted too.",
    )
    leeway_s = models.PositiveIntegerField(
        default=30, validators=[MaxValueValidator(3600)], help_text="Clock skew allowed on exp, nbf and iat (seconds)."
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        db_table = "gateway_token_issuer"
        ordering = ["application__name", "issuer"]
        verbose_name = "token issuer"

    def __str__(self) -> str:
        return self.issuer

    def clean(self) -> None:
        for name in ("jwks_url", "secret_env", "introspection_url"):
            if getattr(self, name) == "":
                setattr(self, name, None)
        algorithms = self.algorithms if isinstance(self.algorithms, list) else []
        errors = issuer_errors(
            jwks_url=self.jwks_url,
            secret_env=self.secret_env,
            introspection_url=self.introspection_url,
            algorithms=algorithms,
        )
        if errors:
            raise ValidationError(errors)
