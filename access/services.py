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


# --- Applications and whitelist entries (admin API, config import) --------------------
# Each write validates through the model and records a LogEntry for ``actor``; the
# routing app's signals reload the config after the transaction commits.

from collections.abc import Mapping  # noqa: E402 - imports of this appended section

from django.contrib.admin.models import ADDITION, CHANGE  # noqa: E402

from access.models import EndpointWhitelist  # noqa: E402
from gateway_core.changes import Actor, audit_record, model_create, model_delete, model_update  # noqa: E402

APPLICATION_FIELDS = ("name", "description", "allowed_services", "allowed_versions", "allowed_origins", "is_active")
WHITELIST_FIELDS = (
    "endpoint_path",
    "allowed_methods",
    "allowed_versions",
    "rate_limit",
    "is_public",
    "rate_limit_by",
    "required_scopes",
)


def application_create(*, actor: Actor, fields: Mapping[str, object]) -> Application:
    """Create an application from ``fields`` (APPLICATION_FIELDS); raise ValidationError when invalid."""
    application = Application(**_only(fields, APPLICATION_FIELDS))
    model_create(application, actor=actor)
    return application


def application_update(*, application: Application, actor: Actor, fields: Mapping[str, object]) -> list[str]:
    """Change ``fields`` of ``application``; return the names of the fields that changed."""
    return model_update(application, fields=_only(fields, APPLICATION_FIELDS), actor=actor)


def application_delete(*, application: Application, actor: Actor) -> None:
    """Delete ``application`` with its whitelist entries, token issuers and API keys (each recorded)."""
    for entry in application.whitelist.all():
        model_delete(entry, actor=actor)
    for issuer in application.token_issuers.all():
        model_delete(issuer, actor=actor)
    for key in application.api_keys.all():
        model_delete(key, actor=actor)
    model_delete(application, actor=actor)


def whitelist_entry_create(
    *, application: Application, actor: Actor, fields: Mapping[str, object]
) -> EndpointWhitelist:
    """Create a whitelist entry of ``application`` from ``fields`` (WHITELIST_FIELDS)."""
    entry = EndpointWhitelist(application=application, **_only(fields, WHITELIST_FIELDS))
    model_create(entry, actor=actor)
    return entry


def whitelist_entry_update(*, entry: EndpointWhitelist, actor: Actor, fields: Mapping[str, object]) -> list[str]:
    """Change ``fields`` of ``entry``; return the names of the fields that changed."""
    return model_update(entry, fields=_only(fields, WHITELIST_FIELDS), actor=actor)


def whitelist_entry_delete(*, entry: EndpointWhitelist, actor: Actor) -> None:
    """Delete ``entry``."""
    model_delete(entry, actor=actor)


def api_key_issue(
    *, application: Application, actor: Actor, name: str, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key with ``api_key_create`` and record it; return it with the plaintext (shown once)."""
    key, plaintext = api_key_create(application=application, name=name, expires_at=expires_at)
    audit_record(key, action_flag=ADDITION, actor=actor, message=[{"added": {}}])
    return key, plaintext


def api_key_withdraw(*, key: ApiKey, actor: Actor) -> ApiKey:
    """Revoke ``key`` with ``api_key_revoke`` and record the change when it was active."""
    was_active = key.is_active
    api_key_revoke(key=key)
    if was_active:
        audit_record(key, action_flag=CHANGE, actor=actor, message=[{"changed": {"fields": ["Is active"]}}])
    return key


# --- Token issuers (SPEC §3): admin API, config import ------------------------------------

from access.models import TokenIssuer  # noqa: E402

TOKEN_ISSUER_FIELDS = (
    "issuer",
    "jwks_url",
    "secret_env",
    "introspection_url",
    "audiences",
    "algorithms",
    "user_claim",
    "scope_claim",
    "leeway_s",
    "is_active",
)


def token_issuer_create(*, application: Application, actor: Actor, fields: Mapping[str, object]) -> TokenIssuer:
    """Create a token issuer of ``application`` from ``fields`` (TOKEN_ISSUER_FIELDS)."""
    issuer = TokenIssuer(application=application, **_only(fields, TOKEN_ISSUER_FIELDS))
    model_create(issuer, actor=actor)
    return issuer


def token_issuer_update(*, issuer: TokenIssuer, actor: Actor, fields: Mapping[str, object]) -> list[str]:
    """Change ``fields`` of ``issuer``; return the names of the fields that changed."""
    return model_update(issuer, fields=_only(fields, TOKEN_ISSUER_FIELDS), actor=actor)


def token_issuer_delete(*, issuer: TokenIssuer, actor: Actor) -> None:
    """Delete ``issuer``; its tokens stop working on every gateway with the next reload."""
    model_delete(issuer, actor=actor)


def _only(fields: Mapping[str, object], allowed: tuple[str, ...]) -> dict[str, object]:
    unknown = set(fields) - set(allowed)
    if unknown:
        raise TypeError(f"Unknown fields: {', '.join(sorted(unknown))}")
    return dict(fields)
