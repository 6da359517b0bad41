"""JSON shapes of the admin REST API (SPEC §7): the model field names, nothing secret.

Serializers parse and render. Field checks are the model fields' own validators
(ModelSerializer copies them, as the admin's ModelForm does), so every bad field is
reported at once; uniqueness and ``clean()`` are left to the model's ``full_clean()``,
which the services run (one source of truth with the admin UI).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from django.db import models
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import UniqueValidator

from access.models import ApiKey, Application, EndpointWhitelist, TokenIssuer
from access.services import APPLICATION_FIELDS, TOKEN_ISSUER_FIELDS, WHITELIST_FIELDS
from access.tokens_validation import validate_algorithm_list, validate_audience_list, validate_scope_list
from gateway_core.validators import (
    validate_method_list,
    validate_origin_list,
    validate_service_list,
    validate_version_list,
)
from routing.models import ServiceConfig, ServiceVersion
from routing.services import SERVICE_FIELDS, VERSION_FIELDS

# PostgreSQL's integer column; a larger number is refused before it reaches the database.
INT_MAX = 2_147_483_647
LIST_MAX_ITEMS = 200


class StrictCharField(serializers.CharField):
    """A string, and only a string: ``0`` or ``true`` is refused, not turned into ``"0"``."""

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: ``"5"``, ``5.0`` and ``true`` are refused."""

    def to_internal_value(self, data: object) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean: ``"true"``, ``1`` and ``"yes"`` are refused."""

    def to_internal_value(self, data: object) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


def string_list(item_max_length: int, help_text: str, validator: Callable[[object], None]) -> serializers.ListField:
    """Return a JSON list-of-strings field checked by the model field's ``validator``.

    NUL characters are refused, as PostgreSQL would refuse them.
    """
    return serializers.ListField(
        validators=[validator],
        child=StrictCharField(max_length=item_max_length, allow_blank=False, trim_whitespace=False),
        required=False,
        max_length=LIST_MAX_ITEMS,
        help_text=help_text,
    )


class NullableBlankMixin:
    """Store ``""`` as null for the nullable text fields named in ``Meta.blank_is_null``."""

    def validate(self, attrs: Mapping[str, object]) -> dict[str, object]:
        values = dict(attrs)
        for name in getattr(self.Meta, "blank_is_null", ()):  # type: ignore[attr-defined]  # serializer Meta
            if values.get(name) == "":
                values[name] = None
        return values


class ModelRulesSerializer(serializers.ModelSerializer):
    """A ModelSerializer with strict JSON types that leaves uniqueness to the model's ``full_clean()``."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.IntegerField: StrictIntegerField,
        models.PositiveIntegerField: StrictIntegerField,
        models.BooleanField: StrictBooleanField,
    }

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for field_ in fields.values():
            field_.validators = [v for v in field_.validators if not isinstance(v, UniqueValidator)]
        return fields


class ServiceSerializer(NullableBlankMixin, ModelRulesSerializer):
    """A service config (table gateway_service_config)."""

    class Meta:
        model = ServiceConfig
        fields = ("id", *SERVICE_FIELDS, "created_at", "updated_at")
        read_only_fields = ("id", "created_at", "updated_at")
        validators: list[object] = []
        blank_is_null = ("current_version", "fallback_url")
        extra_kwargs = {
            "route_prefix": {"required": False},
            "timeout_ms": {"min_value": 1, "max_value": 3_600_000},
        }


class ServiceVersionSerializer(ModelRulesSerializer):
    """A version of a service (table gateway_service_version)."""

    service = serializers.SlugRelatedField(slug_field="service_name", read_only=True)

    class Meta:
        model = ServiceVersion
        fields = ("id", "service", *VERSION_FIELDS, "created_at", "updated_at")
        read_only_fields = ("id", "service", "created_at", "updated_at")
        validators: list[object] = []
        extra_kwargs = {"weight": {"min_value": 0, "max_value": 1000}}


class ApplicationSerializer(ModelRulesSerializer):
    """A client application (table gateway_application)."""

    allowed_services = string_list(63, "Service names; empty: all.", validate_service_list)
    allowed_versions = string_list(32, "Versions; empty: all.", validate_version_list)
    allowed_origins = string_list(
        255, "Browser origins such as https://app.example.com; empty: none.", validate_origin_list
    )

    class Meta:
        model = Application
        fields = ("id", *APPLICATION_FIELDS, "created_at", "updated_at")
        read_only_fields = ("id", "created_at", "updated_at")
        validators: list[object] = []
        extra_kwargs = {"description": {"max_length": 10_000}}


class WhitelistEntrySerializer(ModelRulesSerializer):
    """An endpoint whitelist entry of an application (table gateway_endpoint_whitelist)."""

    allowed_methods = string_list(16, "Upper-case HTTP methods; empty: all.", validate_method_list)
    allowed_versions = string_list(32, "Versions; empty: all.", validate_version_list)
    required_scopes = string_list(128, "Scopes a bearer-token caller must all hold; empty: none.", validate_scope_list)

    class Meta:
        model = EndpointWhitelist
        fields = ("id", "application", *WHITELIST_FIELDS, "created_at", "updated_at")
        read_only_fields = ("id", "application", "created_at", "updated_at")
        validators: list[object] = []
        extra_kwargs = {"rate_limit": {"min_value": 1, "max_value": INT_MAX}}


class TokenIssuerSerializer(NullableBlankMixin, ModelRulesSerializer):
    """A token issuer of an application (table gateway_token_issuer): never a secret, only its variable's name."""

    audiences = string_list(255, "Accepted aud values; empty: any.", validate_audience_list)
    algorithms = string_list(16, "Algorithms the issuer signs with, e.g. RS256; never none.", validate_algorithm_list)

    class Meta:
        model = TokenIssuer
        fields = ("id", "application", *TOKEN_ISSUER_FIELDS, "created_at", "updated_at")
        read_only_fields = ("id", "application", "created_at", "updated_at")
        validators: list[object] = []
        blank_is_null = ("jwks_url", "secret_env", "introspection_url")
        extra_kwargs = {"leeway_s": {"min_value": 0, "max_value": 3600}}


class ApiKeySerializer(serializers.ModelSerializer):
    """An API key's metadata: never its hash, never the key."""

    class Meta:
        model = ApiKey
        fields = (
            "id",
            "application",
            "name",
            "key_prefix",
            "expires_at",
            "is_active",
            "last_used_at",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    """What a new key needs: a name and an optional expiry in the future."""

    name = StrictCharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

    def validate_expires_at(self, value: object) -> object:
        if value is not None and value <= timezone.now():  # type: ignore[operator]  # a datetime here
            raise serializers.ValidationError("An expiry lies in the future.")
        return value


class ApiKeyCreatedSerializer(ApiKeySerializer):
    """A key just created: its metadata plus the plaintext ``key``, shown this once only."""

    key = serializers.CharField(read_only=True, help_text="<key_prefix>.<secret>; never shown again.")

    class Meta(ApiKeySerializer.Meta):
        fields = (*ApiKeySerializer.Meta.fields, "key")
        read_only_fields = fields


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    request_id = serializers.CharField()
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Field name → messages (400 only). non_field_errors: about the object as a whole.",
    )
    problems = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        required=False,
        help_text="Config import only: every problem with its location.",
    )


class ErrorSerializer(serializers.Serializer):
    """Every error of the admin API: the gateway's one error shape, plus field errors on 400."""

    error = ErrorBodySerializer()


class WorkerVersionSerializer(serializers.Serializer):
    pid = serializers.IntegerField()
    version = serializers.IntegerField()


class CacheStateSerializer(serializers.Serializer):
    """The config snapshot the answering process serves from, and the database's config version."""

    loaded = serializers.BooleanField(help_text="Whether this process has loaded a snapshot.")
    version = serializers.IntegerField(allow_null=True, help_text="Config version of the loaded snapshot.")
    loaded_at = serializers.DateTimeField(allow_null=True, help_text="When this process loaded it.")
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Rows compiled, per kind.")
    config_version = serializers.IntegerField(
        allow_null=True, help_text="The latest config version in the database (null: database unavailable)."
    )
    up_to_date = serializers.BooleanField(help_text="The snapshot is at the database's config version.")
    last_error = serializers.CharField(allow_null=True, help_text="The last failed reload of this process.")
    pid = serializers.IntegerField(help_text="Process id of the worker that answered.")
    workers = WorkerVersionSerializer(
        many=True,
        allow_null=True,
        help_text="Every live worker of the answering gunicorn and the config version it serves "
        "(null outside a gunicorn with a metrics directory).",
    )
    all_workers_up_to_date = serializers.BooleanField(
        help_text="Every live worker of this node serves the database's config version."
    )


class StatusSerializer(serializers.Serializer):
    status = serializers.CharField()


class QueueStatSerializer(serializers.Serializer):
    queue = serializers.CharField()
    depth = serializers.IntegerField(allow_null=True, help_text="Messages ready; null when unknown.")
    consumers = serializers.IntegerField(allow_null=True, help_text="Consumers attached; null when unknown.")
    dead_letter_depth = serializers.IntegerField(
        allow_null=True, required=False, help_text="Messages in the queue's dead-letter queue; null when unknown."
    )


class QueuesSerializer(serializers.Serializer):
    queues = QueueStatSerializer(many=True)


class DiffItemSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["service", "service_version", "application", "whitelist_entry"])
    key = serializers.DictField(child=serializers.CharField(), help_text="The natural key.")
    fields = serializers.ListField(child=serializers.CharField(), required=False, help_text="Updates only.")


class ImportResultSerializer(serializers.Serializer):
    """What an import did (or, with dry_run, would do)."""

    dry_run = serializers.BooleanField()
    created = DiffItemSerializer(many=True)
    updated = DiffItemSerializer(many=True)
    deleted = DiffItemSerializer(many=True)


# --- The declarative config document (export / import); see admin_panel/config_io.py ---
# These describe the document for the OpenAPI schema; config_io validates it itself,
# so that every problem is reported with its location in the document.


class ConfigVersionSerializer(serializers.Serializer):
    version = serializers.CharField()
    url = serializers.CharField()
    weight = serializers.IntegerField(required=False, min_value=0, max_value=1000)
    is_active = serializers.BooleanField(required=False)


class ConfigServiceSerializer(serializers.Serializer):
    service_name = serializers.CharField()
    default_url = serializers.CharField()
    current_version = serializers.CharField(required=False, allow_null=True)
    fallback_url = serializers.CharField(required=False, allow_null=True)
    is_active = serializers.BooleanField(required=False)
    route_prefix = serializers.CharField(required=False, allow_blank=True)
    upstream_prefix = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    timeout_ms = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=3_600_000)
    versions = ConfigVersionSerializer(many=True, required=False)


class ConfigEntrySerializer(serializers.Serializer):
    endpoint_path = serializers.CharField()
    allowed_methods = serializers.ListField(child=serializers.CharField(), required=False)
    allowed_versions = serializers.ListField(child=serializers.CharField(), required=False)
    rate_limit = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=INT_MAX)
    is_public = serializers.BooleanField(required=False)
    rate_limit_by = serializers.ChoiceField(choices=["application", "user"], required=False)
    required_scopes = serializers.ListField(child=serializers.CharField(), required=False)


class ConfigIssuerSerializer(serializers.Serializer):
    issuer = serializers.CharField()
    jwks_url = serializers.CharField(required=False, allow_null=True)
    secret_env = serializers.CharField(required=False, allow_null=True)
    introspection_url = serializers.CharField(required=False, allow_null=True)
    audiences = serializers.ListField(child=serializers.CharField(), required=False)
    algorithms = serializers.ListField(child=serializers.CharField(), required=False)
    user_claim = serializers.CharField(required=False)
    scope_claim = serializers.CharField(required=False)
    leeway_s = serializers.IntegerField(required=False, min_value=0, max_value=3600)
    is_active = serializers.BooleanField(required=False)


class ConfigKeySerializer(serializers.Serializer):
    """Key metadata: exported for reference, ignored by an import."""

    name = serializers.CharField()
    key_prefix = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True, required=False)
    is_active = serializers.BooleanField(required=False)
    last_used_at = serializers.DateTimeField(allow_null=True, required=False)
    created_at = serializers.DateTimeField(required=False)


class ConfigApplicationSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField(required=False, allow_blank=True)
    allowed_services = serializers.ListField(child=serializers.CharField(), required=False)
    allowed_versions = serializers.ListField(child=serializers.CharField(), required=False)
    allowed_origins = serializers.ListField(child=serializers.CharField(), required=False)
    is_active = serializers.BooleanField(required=False)
    whitelist = ConfigEntrySerializer(many=True, required=False)
    token_issuers = ConfigIssuerSerializer(many=True, required=False)
    api_keys = ConfigKeySerializer(many=True, read_only=True, help_text="Exported for reference; an import ignores it.")


class ConfigDocumentSerializer(serializers.Serializer):
    """The whole gateway config by natural keys: what export writes and import applies."""

    format_version = serializers.IntegerField(required=False, min_value=1, max_value=1)
    services = ConfigServiceSerializer(many=True)
    applications = ConfigApplicationSerializer(many=True)


# --- The config history (admin_panel/revisions.py) -------------------------------------


@extend_schema_field(ConfigDocumentSerializer)
class DocumentField(serializers.JSONField):
    """A stored config document, passed through as it is (the schema describes its shape)."""


class RevisionSerializer(serializers.Serializer):
    """One config revision in the list: number, when, who, what changed."""

    number = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    user = serializers.CharField(source="username", help_text="Who made the change; empty: a shell command.")
    summary = serializers.CharField()
    rollback_of = serializers.IntegerField(allow_null=True, help_text="The revision this one rolled back to.")


class RevisionDetailSerializer(RevisionSerializer):
    """One revision with the whole config document as of that revision (no key hashes)."""

    document = DocumentField(help_text="The whole config document, as /admin/config/export answers it.")
