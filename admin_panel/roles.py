"""The three operator roles (SPEC §7 "Roles"): Django groups kept in step by every ``migrate``.

Each role is a set of Django model permissions. ``roles_ensure`` runs after every
``manage.py migrate`` (and test database set-up), creates the groups and gives each
exactly the permissions listed here that exist, so a table added later (token
issuers) joins its roles on the next migrate. The admin UI and the admin REST API
both check these permissions; superusers may do everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.apps import AppConfig, apps
from django.contrib.auth.management import create_permissions

VIEWER, EDITOR, KEY_MANAGER = "gateway-viewer", "gateway-editor", "gateway-key-manager"

# Every table an operator may look at, and those an editor changes (keys are the key manager's).
GATEWAY_TABLES = (
    "routing.serviceconfig",
    "routing.serviceversion",
    "access.application",
    "access.endpointwhitelist",
    "access.apikey",
    "access.tokenissuer",
    "queues.taskstatus",
    "queues.analyticsevent",
    "admin_panel.revision",
)
EDITED_TABLES = (
    "routing.serviceconfig",
    "routing.serviceversion",
    "access.application",
    "access.endpointwhitelist",
    "access.tokenissuer",
)


def _perms(action: str, tables: Iterable[str]) -> tuple[str, ...]:
    """Return ``app.action_model`` for each ``app.model`` in ``tables``."""
    return tuple(f"{table.split('.')[0]}.{action}_{table.split('.')[1]}" for table in tables)


VIEW_ALL = _perms("view", GATEWAY_TABLES)
EDIT_CONFIG = (*_perms("add", EDITED_TABLES), *_perms("change", EDITED_TABLES), *_perms("delete", EDITED_TABLES))
ROLES: Mapping[str, tuple[str, ...]] = {
    VIEWER: VIEW_ALL,
    EDITOR: (*VIEW_ALL, *EDIT_CONFIG),
    KEY_MANAGER: ("access.view_application", "access.view_apikey", "access.add_apikey", "access.change_apikey"),
}


def roles_ensure(**kwargs: object) -> None:
    """Create the three groups and set their permissions (a ``post_migrate`` receiver).

    Runs after every migrate and every test-database flush, so it is kept to a few
    queries; permissions of an app whose own ``post_migrate`` has not run yet are
    created first.
    """
    from django.contrib.auth.models import Group

    using = str(kwargs.get("using") or "default")
    wanted = {perm for perms in ROLES.values() for perm in perms if _installed(_table_of(perm))}
    found = _permissions(wanted, using)
    missing_apps = {perm.split(".")[0] for perm in wanted - set(found)}
    if missing_apps:
        for app_label in missing_apps:
            create_permissions(apps.get_app_config(app_label), verbosity=0, using=using)
        found = _permissions(wanted, using)
    desired = {(name, perm) for name, perms in ROLES.items() for perm in perms if perm in found}
    held = Group.permissions.through.objects.using(using).filter(group__name__in=list(ROLES))
    current = {
        (row["group__name"], f"{row['permission__content_type__app_label']}.{row['permission__codename']}")
        for row in held.values("group__name", "permission__content_type__app_label", "permission__codename")
    }
    if current == desired and Group.objects.using(using).filter(name__in=list(ROLES)).count() == len(ROLES):
        return  # the usual case after the first migrate: two queries
    for name, perms in ROLES.items():
        group, _ = Group.objects.using(using).get_or_create(name=name)
        group.permissions.set([found[perm] for perm in perms if perm in found])


def _table_of(perm: str) -> str:
    app_label, codename = perm.split(".")
    return f"{app_label}.{codename.split('_', 1)[1]}"


def _permissions(wanted: set[str], using: str) -> dict[str, object]:
    from django.contrib.auth.models import Permission

    labels = {perm.split(".")[0] for perm in wanted}
    rows = Permission.objects.using(using).filter(content_type__app_label__in=labels).select_related("content_type")
    found = {f"{p.content_type.app_label}.{p.codename}": p for p in rows}
    return {perm: row for perm, row in found.items() if perm in wanted}


def connect(config: AppConfig) -> None:
    """Run ``roles_ensure`` after the migrations of ``config``'s app (the last app migrated)."""
    from django.db.models.signals import post_migrate

    post_migrate.connect(roles_ensure, sender=config, dispatch_uid="gateway-roles-ensure")


def config_permissions(*actions: str, with_keys: bool = False) -> tuple[str, ...]:
    """Return ``actions`` on every installed config table (the whole document's permissions).

    An export or revision shows the key metadata too (``with_keys``: ``view_apikey``);
    an import or rollback writes every config table but never a key.
    """
    installed = [table for table in EDITED_TABLES if _installed(table)]
    needed = tuple(perm for action in actions for perm in _perms(action, installed))
    return (*needed, "access.view_apikey") if with_keys else needed


def _installed(table: str) -> bool:
    app_label, model_name = table.split(".")
    try:
        apps.get_model(app_label, model_name)
    except LookupError:
        return False
    return True
