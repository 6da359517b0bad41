"""Declarative config: export the five tables and token issuers as one document, import one all-or-nothing.

The document names objects by natural keys (service name; service + version;
application name; application + endpoint path; issuer), never by id, so it can be kept in
git and applied to any gateway. An import makes the config equal to the document:
what is absent is deleted. API keys are exported as metadata (never hashes) and an
import never creates, changes or deletes one; it refuses to delete an application
that still has keys, since that would delete them. Every row is checked with the
model's ``full_clean()``; an invalid document changes nothing and every problem is
reported with its location (``services[2].versions[0].url``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models, transaction

from access import services as access_services
from access.models import ApiKey, Application, EndpointWhitelist, TokenIssuer
from gateway_core.changes import Actor
from routing import services as routing_services
from routing.models import ServiceConfig, ServiceVersion

FORMAT_VERSION = 1
T = TypeVar("T")

# Field → (accepted JSON types, default when absent). REQUIRED marks a field with no default.
REQUIRED = object()
_STR, _NULL_STR, _BOOL, _LIST = (str,), (str, type(None)), (bool,), (list,)
SERVICE_FIELDS: Mapping[str, tuple[tuple[type, ...], object]] = {
    "service_name": (_STR, REQUIRED),
    "default_url": (_STR, REQUIRED),
    "current_version": (_NULL_STR, None),
    "fallback_url": (_NULL_STR, None),
    "is_active": (_BOOL, True),
    "route_prefix": (_STR, ""),
    "upstream_prefix": (_NULL_STR, None),
    "timeout_ms": ((int, type(None)), None),
}
VERSION_FIELDS: Mapping[str, tuple[tuple[type, ...], object]] = {
    "version": (_STR, REQUIRED),
    "url": (_STR, REQUIRED),
    "weight": ((int,), 100),
    "is_active": (_BOOL, True),
}
APPLICATION_FIELDS: Mapping[str, tuple[tuple[type, ...], object]] = {
    "name": (_STR, REQUIRED),
    "description": (_STR, ""),
    "allowed_services": (_LIST, []),
    "allowed_versions": (_LIST, []),
    "allowed_origins": (_LIST, []),
    "is_active": (_BOOL, True),
}
ENTRY_FIELDS: Mapping[str, tuple[tuple[type, ...], object]] = {
    "endpoint_path": (_STR, REQUIRED),
    "allowed_methods": (_LIST, []),
    "allowed_versions": (_LIST, []),
    "rate_limit": ((int, type(None)), None),
    "is_public": (_BOOL, False),
    "rate_limit_by": (_STR, "application"),
    "required_scopes": (_LIST, []),
}
ISSUER_FIELDS: Mapping[str, tuple[tuple[type, ...], object]] = {
    "issuer": (_STR, REQUIRED),
    "jwks_url": (_NULL_STR, None),
    "secret_env": (_NULL_STR, None),
    "introspection_url": (_NULL_STR, None),
    "audiences": (_LIST, []),
    "algorithms": (_LIST, []),
    "user_claim": (_STR, "sub"),
    "scope_claim": (_STR, "scope"),
    "leeway_s": ((int,), 30),
    "is_active": (_BOOL, True),
}
KEY_FIELDS = ("name", "key_prefix", "expires_at", "is_active", "last_used_at", "created_at")
# Nullable text fields where "" means "unset", as in the admin API.
BLANK_IS_NULL = frozenset({"current_version", "fallback_url", "jwks_url", "secret_env", "introspection_url"})


# --- Export ------------------------------------------------------------------------------


def config_export() -> dict[str, object]:
    """Return the whole config as a JSON-ready document (no ids, no key hashes)."""
    services = ServiceConfig.objects.prefetch_related("versions").order_by("service_name")
    applications = Application.objects.prefetch_related("whitelist", "token_issuers", "api_keys").order_by("name")
    return {
        "format_version": FORMAT_VERSION,
        "services": [
            {
                **_values(service, SERVICE_FIELDS),
                "versions": [_values(v, VERSION_FIELDS) for v in sorted(service.versions.all(), key=_by("version"))],
            }
            for service in services
        ],
        "applications": [
            {
                **_values(app, APPLICATION_FIELDS),
                "whitelist": [_values(e, ENTRY_FIELDS) for e in sorted(app.whitelist.all(), key=_by("endpoint_path"))],
                "token_issuers": [
                    _values(i, ISSUER_FIELDS) for i in sorted(app.token_issuers.all(), key=_by("issuer"))
                ],
                "api_keys": [_key_metadata(k) for k in sorted(app.api_keys.all(), key=_by("key_prefix"))],
            }
            for app in applications
        ],
    }


def _values(row: models.Model, spec: Mapping[str, object]) -> dict[str, object]:
    return {name: getattr(row, name) for name in spec}


def _key_metadata(key: ApiKey) -> dict[str, object]:
    values = {name: getattr(key, name) for name in KEY_FIELDS}
    for name in ("expires_at", "last_used_at", "created_at"):
        if values[name] is not None:
            values[name] = values[name].isoformat()
    return values


def _by(name: str) -> Callable[[models.Model], str]:
    return lambda row: str(getattr(row, name))


# --- Import: results and problems -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One row an import creates, updates (``fields`` changed) or deletes."""

    kind: str  # service | service_version | application | whitelist_entry | token_issuer
    key: Mapping[str, str]
    fields: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        item: dict[str, object] = {"kind": self.kind, "key": dict(self.key)}
        if self.fields:
            item["fields"] = list(self.fields)
        return item


@dataclass(slots=True)
class ImportDiff:
    """What an import did, or with ``dry_run`` would do."""

    dry_run: bool
    created: list[Change] = field(default_factory=list)
    updated: list[Change] = field(default_factory=list)
    deleted: list[Change] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.created or self.updated or self.deleted)

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "created": [c.as_dict() for c in self.created],
            "updated": [c.as_dict() for c in self.updated],
            "deleted": [c.as_dict() for c in self.deleted],
        }


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a document cannot be imported, and where: ``services[2].versions[0].url``."""

    location: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"location": self.location, "message": self.message}

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class ConfigInvalid(Exception):
    """The document cannot be imported; nothing was changed. ``problems`` names each reason."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the config document")
        self.problems = list(problems)


# --- Import: parsing and checking the document -----------------------------------------


@dataclass(slots=True)
class _Desired:
    """One row the document asks for: its normalized field values and children."""

    location: str
    values: dict[str, object]
    raw: Mapping[str, object]  # as in the document: its nested lists are parsed next
    children: dict[str, _Desired] = field(default_factory=dict)
    issuers: dict[str, _Desired] = field(default_factory=dict)  # an application's token issuers, by iss


class _Parser:
    """Check the document's shape and every row's validity, collecting every problem."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, location: str, message: str) -> None:
        self.problems.append(Problem(location, message))

    def document(self, document: object) -> tuple[dict[str, _Desired], dict[str, _Desired]]:
        if not isinstance(document, Mapping):
            self.problem("$", "The document is a JSON object with 'services' and 'applications'.")
            return {}, {}
        self.unknown_keys("$", document, {"format_version", "services", "applications"})
        version = document.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION or isinstance(version, bool):
            self.problem("format_version", f"Unsupported format version; this gateway reads {FORMAT_VERSION}.")
        services = self.rows(
            document, "services", "service_name", lambda loc, raw: self.row(loc, raw, SERVICE_FIELDS, ServiceConfig)
        )
        for service in services.values():
            service.children = self.rows(
                service.raw,
                "versions",
                "version",
                lambda loc, raw: self.row(loc, raw, VERSION_FIELDS, ServiceVersion, exclude=("service",)),
                base=service.location,
                required=False,
            )
        self.unique(services.values(), "route_prefix")
        applications = self.rows(
            document,
            "applications",
            "name",
            lambda loc, raw: self.row(
                loc, raw, APPLICATION_FIELDS, Application, extra=("whitelist", "token_issuers", "api_keys")
            ),
        )
        for app in applications.values():
            app.children = self.rows(
                app.raw,
                "whitelist",
                "endpoint_path",
                lambda loc, raw: self.row(loc, raw, ENTRY_FIELDS, EndpointWhitelist, exclude=("application",)),
                base=app.location,
                required=False,
            )
            app.issuers = self.rows(
                app.raw,
                "token_issuers",
                "issuer",
                lambda loc, raw: self.row(loc, raw, ISSUER_FIELDS, TokenIssuer, exclude=("application",)),
                base=app.location,
                required=False,
            )
        self.unique([i for app in applications.values() for i in app.issuers.values()], "issuer")
        return services, applications

    def rows(
        self,
        parent: Mapping[str, object],
        name: str,
        natural_key: str,
        parse: Callable[[str, object], _Desired | None],
        *,
        base: str = "",
        required: bool = True,
    ) -> dict[str, _Desired]:
        """Parse the list ``parent[name]``; return rows by natural key (duplicates are problems)."""
        location = f"{base}.{name}" if base else name
        items = parent.get(name, None if required else [])
        if not isinstance(items, list):
            self.problem(location, "Required: a list." if items is None else "Must be a list.")
            return {}
        rows: dict[str, _Desired] = {}
        for index, raw in enumerate(items):
            row = parse(f"{location}[{index}]", raw)
            if row is None:
                continue
            key = row.values[natural_key]
            if not isinstance(key, str):
                continue  # already reported as missing or mistyped
            if key in rows:
                self.problem(f"{row.location}.{natural_key}", f"Duplicate of {rows[key].location} ('{key}').")
                continue
            rows[key] = row
        return rows

    def row(
        self,
        location: str,
        raw: object,
        spec: Mapping[str, tuple[tuple[type, ...], object]],
        model: type[models.Model],
        *,
        exclude: Iterable[str] = (),
        extra: Iterable[str] = (),
    ) -> _Desired | None:
        """Check one row's keys and JSON types, then the model's own validation.

        An invalid row is still returned (its problems recorded), so its nested rows
        and its natural key are checked too and every problem is reported at once.
        """
        if not isinstance(raw, Mapping):
            self.problem(location, "Must be an object.")
            return None
        nested = {"versions"} if model is ServiceConfig else set(extra)
        self.unknown_keys(location, raw, set(spec) | nested)
        values: dict[str, object] = {}
        unusable: list[str] = []  # missing or mistyped: left out of the model checks
        for name, (types, default) in spec.items():
            if name not in raw:
                if default is REQUIRED:
                    self.problem(f"{location}.{name}", "This field is required.")
                    unusable.append(name)
                values[name] = list(default) if isinstance(default, list) else default
                continue
            value = raw[name]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                self.problem(f"{location}.{name}", f"Must be {_type_names(types)}.")
                unusable.append(name)
            elif _has_nul(value):
                # PostgreSQL cannot store NUL in text; the API's fields refuse it the same way.
                self.problem(f"{location}.{name}", "Null characters are not allowed.")
                unusable.append(name)
            values[name] = None if name in BLANK_IS_NULL and value == "" else value
        instance = model(**{name: value for name, value in values.items() if name not in unusable})
        try:
            instance.full_clean(exclude=[*exclude, *unusable], validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                where = location if name == NON_FIELD_ERRORS else f"{location}.{name}"
                for message in messages:
                    self.problem(where, message)
            return _Desired(location, values, raw)
        if unusable:
            return _Desired(location, values, raw)
        # clean() normalizes (e.g. fills the default route prefix): compare what would be stored.
        return _Desired(location, {name: getattr(instance, name) for name in spec}, raw)

    def unknown_keys(self, location: str, raw: Mapping[str, object], known: set[str]) -> None:
        for name in raw:
            if name not in known:
                where = name if location == "$" else f"{location}.{name}"
                self.problem(where, "Unknown field.")

    def unique(self, rows: Iterable[_Desired], name: str) -> None:
        seen: dict[object, str] = {}
        for row in rows:
            value = row.values[name]
            if not isinstance(value, str):
                continue
            if value in seen:
                self.problem(f"{row.location}.{name}", f"Also used by {seen[value]} ('{value}').")
            else:
                seen[value] = row.location


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    return isinstance(value, list) and any(isinstance(item, str) and "\x00" in item for item in value)


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", list: "a list", type(None): "null"}
    return " or ".join(names[t] for t in types)


# --- Import: diff and apply ------------------------------------------------------------


def config_import(document: object, *, actor: Actor, dry_run: bool = False) -> ImportDiff:
    """Make the config equal to ``document`` in one transaction; return the diff.

    With ``dry_run`` nothing is written. Raises ``ConfigInvalid`` (nothing changed)
    when the document is invalid or a row is refused while applying it.
    """
    parser = _Parser()
    services, applications = parser.document(document)
    problems = parser.problems
    if not problems:
        problems = _keys_kept(applications)
    if problems:
        raise ConfigInvalid(problems)
    diff = ImportDiff(dry_run=dry_run)
    try:
        with transaction.atomic():
            if not dry_run:
                _lock_config()
            _sync_services(services, diff, actor=actor, dry_run=dry_run)
            issuers_before = list(TokenIssuer.objects.select_related("application"))
            _sync_applications(applications, diff, actor=actor, dry_run=dry_run)
            _sync_issuers(applications, issuers_before, diff, actor=actor, dry_run=dry_run)
    except _Refused as refused:
        raise ConfigInvalid([refused.problem]) from None
    return diff


def _lock_config() -> None:
    """Serialize imports: lock the config revision row until this transaction ends (PostgreSQL).

    Two concurrent imports would otherwise each diff against the config before the
    other's changes. SQLite locks the whole database on the first write anyway.
    """
    from routing.reload import REVISION_ROW_ID, ConfigRevision

    list(ConfigRevision.objects.select_for_update().filter(id=REVISION_ROW_ID).values_list("id", flat=True))


class _Refused(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _keys_kept(applications: Mapping[str, _Desired]) -> list[Problem]:
    """Refuse to delete applications that have API keys: an import never deletes a key."""
    doomed = Application.objects.exclude(name__in=list(applications)).filter(api_keys__isnull=False).distinct()
    return [
        Problem(
            "applications",
            f"Application '{app.name}' is not in the document but has API keys; an import never deletes "
            "keys. Add the application to the document, or delete it in the admin first.",
        )
        for app in doomed.order_by("name")
    ]


def _changed(row: models.Model, values: Mapping[str, object]) -> tuple[str, ...]:
    return tuple(name for name, value in values.items() if getattr(row, name) != value)


def _write(location: str, apply: Callable[[], T]) -> T:
    """Run one service call; a row the models refuse becomes the import's problem."""
    try:
        return apply()
    except ValidationError as exc:
        messages = "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.message_dict.items())
        raise _Refused(Problem(location, messages)) from None


def _sync_services(desired: Mapping[str, _Desired], diff: ImportDiff, *, actor: Actor, dry_run: bool) -> None:
    existing = {s.service_name: s for s in ServiceConfig.objects.prefetch_related("versions")}
    # Deletions first, so a route prefix or version may move to another row within one import.
    for name, service in sorted(existing.items()):
        if name not in desired:
            for version in sorted(service.versions.all(), key=_by("version")):
                diff.deleted.append(Change("service_version", {"service": name, "version": version.version}))
            diff.deleted.append(Change("service", {"service_name": name}))
            if not dry_run:
                routing_services.service_delete(service=service, actor=actor)
        else:
            for version in sorted(service.versions.all(), key=_by("version")):
                if version.version not in desired[name].children:
                    diff.deleted.append(Change("service_version", {"service": name, "version": version.version}))
                    if not dry_run:
                        routing_services.service_version_delete(version=version, actor=actor)
    for name, want in desired.items():
        key = {"service_name": name}
        service = existing.get(name)
        current: dict[str, ServiceVersion] = {}
        if service is None:
            diff.created.append(Change("service", key))
            if not dry_run:
                create = partial(routing_services.service_create, actor=actor, fields=want.values)
                service = _write(want.location, create)
        else:
            current = {v.version: v for v in service.versions.all()}
            fields = _changed(service, want.values)
            if fields:
                diff.updated.append(Change("service", key, fields))
                if not dry_run:
                    update = partial(routing_services.service_update, service=service, actor=actor, fields=want.values)
                    _write(want.location, update)
        for version_name, version_want in want.children.items():
            version_key = {"service": name, "version": version_name}
            version = current.get(version_name)
            if version is None:
                diff.created.append(Change("service_version", version_key))
                if service is not None and not dry_run:
                    create_version = partial(
                        routing_services.service_version_create,
                        service=service,
                        actor=actor,
                        fields=version_want.values,
                    )
                    _write(version_want.location, create_version)
                continue
            fields = _changed(version, version_want.values)
            if fields:
                diff.updated.append(Change("service_version", version_key, fields))
                if not dry_run:
                    update_version = partial(
                        routing_services.service_version_update,
                        version=version,
                        actor=actor,
                        fields=version_want.values,
                    )
                    _write(version_want.location, update_version)


def _sync_applications(desired: Mapping[str, _Desired], diff: ImportDiff, *, actor: Actor, dry_run: bool) -> None:
    existing = {a.name: a for a in Application.objects.prefetch_related("whitelist")}
    for name, app in sorted(existing.items()):
        for entry in sorted(app.whitelist.all(), key=_by("endpoint_path")):
            if name not in desired or entry.endpoint_path not in desired[name].children:
                diff.deleted.append(
                    Change("whitelist_entry", {"application": name, "endpoint_path": entry.endpoint_path})
                )
                if name in desired and not dry_run:
                    access_services.whitelist_entry_delete(entry=entry, actor=actor)
        if name not in desired:
            diff.deleted.append(Change("application", {"name": name}))
            if not dry_run:
                access_services.application_delete(application=app, actor=actor)
    for name, want in desired.items():
        key = {"name": name}
        app = existing.get(name)
        current: dict[str, EndpointWhitelist] = {}
        if app is None:
            diff.created.append(Change("application", key))
            if not dry_run:
                app = _write(
                    want.location, partial(access_services.application_create, actor=actor, fields=want.values)
                )
        else:
            current = {e.endpoint_path: e for e in app.whitelist.all()}
            fields = _changed(app, want.values)
            if fields:
                diff.updated.append(Change("application", key, fields))
                if not dry_run:
                    update = partial(
                        access_services.application_update, application=app, actor=actor, fields=want.values
                    )
                    _write(want.location, update)
        for path, entry_want in want.children.items():
            entry_key = {"application": name, "endpoint_path": path}
            entry = current.get(path)
            if entry is None:
                diff.created.append(Change("whitelist_entry", entry_key))
                if app is not None and not dry_run:
                    create_entry = partial(
                        access_services.whitelist_entry_create, application=app, actor=actor, fields=entry_want.values
                    )
                    _write(entry_want.location, create_entry)
                continue
            fields = _changed(entry, entry_want.values)
            if fields:
                diff.updated.append(Change("whitelist_entry", entry_key, fields))
                if not dry_run:
                    update_entry = partial(
                        access_services.whitelist_entry_update, entry=entry, actor=actor, fields=entry_want.values
                    )
                    _write(entry_want.location, update_entry)


def _sync_issuers(
    desired: Mapping[str, _Desired],
    existing: Sequence[TokenIssuer],
    diff: ImportDiff,
    *,
    actor: Actor,
    dry_run: bool,
) -> None:
    """Make the token issuers equal to the document's, matched by ``issuer`` (the iss value).

    ``existing`` was read before the applications were synced, so the diff lists the
    issuers of deleted applications too (they went with their application). An issuer
    that moves to another application is deleted and created again.
    """
    wanted = {iss: (app_name, row) for app_name, app in desired.items() for iss, row in app.issuers.items()}
    kept: dict[str, TokenIssuer] = {}
    for issuer in sorted(existing, key=_by("issuer")):
        owner = issuer.application.name
        if issuer.issuer in wanted and wanted[issuer.issuer][0] == owner:
            kept[issuer.issuer] = issuer
            continue
        diff.deleted.append(Change("token_issuer", {"application": owner, "issuer": issuer.issuer}))
        if not dry_run:
            still_there = TokenIssuer.objects.filter(pk=issuer.pk).first()  # gone with its application?
            if still_there is not None:
                access_services.token_issuer_delete(issuer=still_there, actor=actor)
    for iss, (app_name, want) in wanted.items():
        key = {"application": app_name, "issuer": iss}
        issuer = kept.get(iss)
        if issuer is None:
            diff.created.append(Change("token_issuer", key))
            if not dry_run:
                application = Application.objects.get(name=app_name)
                create = partial(
                    access_services.token_issuer_create, application=application, actor=actor, fields=want.values
                )
                _write(want.location, create)
            continue
        fields = _changed(issuer, want.values)
        if fields:
            diff.updated.append(Change("token_issuer", key, fields))
            if not dry_run:
                update = partial(access_services.token_issuer_update, issuer=issuer, actor=actor, fields=want.values)
                _write(want.location, update)
