"""The config history: record, list, compare and roll back numbered revisions (SPEC §7).

Every committed config change (admin UI, REST API, import, shell) ends in
``routing.reload.reload_now``, which sends ``config_committed``; ``on_config_committed``
then records the whole config document (``config_export()`` without the
``last_used_at`` bookkeeping) as the next numbered revision, unless it equals the
latest one (a reload that changed nothing). Who made it is the user of the admin
history entries written since the previous revision (every write service and the
admin UI write one); a shell change names nobody. A rollback is an import of an old
document: all or nothing, propagated like any change, recorded as a new revision.
Revisions are kept 90 days or the last 1,000, whichever keeps more.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from admin_panel.config_io import Change, ImportDiff, config_export, config_import
from admin_panel.models import Revision
from gateway_core.changes import Actor, config_committed

logger = logging.getLogger("gateway.revisions")

KEEP_DAYS = 90
KEEP_COUNT = 1000
# Fields that change without a config change: never part of a revision.
BOOKKEEPING_FIELDS = frozenset({"last_used_at"})
# How each list of the document names its rows, and what kind of row it holds.
NATURAL_KEYS: Mapping[str, tuple[str, str]] = {
    "services": ("service_name", "service"),
    "versions": ("version", "service_version"),
    "applications": ("name", "application"),
    "whitelist": ("endpoint_path", "whitelist_entry"),
    "api_keys": ("key_prefix", "api_key"),
    "token_issuers": ("issuer", "token_issuer"),
}
# The parent's key field as the child's key names it (``{"service": ..., "version": ...}``).
PARENT_KEY_NAMES: Mapping[str, str] = {"services": "service", "applications": "application"}

# Set while a rollback's import runs, so the revision it commits says what it is.
_rollback_of: contextvars.ContextVar[int | None] = contextvars.ContextVar("rollback_of", default=None)


# --- Recording ------------------------------------------------------------------------------


def revision_document() -> dict[str, object]:
    """Return the config document a revision holds: the export without bookkeeping fields."""
    return _without_bookkeeping(config_export())


def _without_bookkeeping(value: object) -> object:
    if isinstance(value, Mapping):
        return {k: _without_bookkeeping(v) for k, v in value.items() if k not in BOOKKEEPING_FIELDS}
    if isinstance(value, list):
        return [_without_bookkeeping(item) for item in value]
    return value


def revision_record(*, actor: Actor = None, rollback_of: int | None = None, force: bool = False) -> Revision | None:
    """Record the current config as the next revision; return it, or None when nothing changed.

    ``actor`` None: the user of the admin history entries since the previous revision.
    ``force`` records even an unchanged document (a rollback that changed nothing).
    """
    document = revision_document()
    for _attempt in range(5):  # two writers may take the same number: the loser takes the next
        latest = Revision.objects.order_by("-number").first()
        if latest is not None and latest.document == document and not force:
            return None
        user = actor if actor is not None and actor.pk is not None else _recent_author(latest)
        summary = diff_summary(document_diff(latest.document if latest else {}, document))
        if rollback_of is not None:
            summary = f"Rollback to revision {rollback_of}: {summary}"
        try:
            with transaction.atomic():
                revision = Revision.objects.create(
                    number=(latest.number if latest else 0) + 1,
                    user=user,
                    username=user.get_username() if user is not None else "",
                    summary=summary[:500],
                    rollback_of=rollback_of,
                    document=document,
                )
        except IntegrityError:
            continue
        _prune(revision.number)
        return revision
    logger.warning("config revision not recorded: revision numbers kept colliding")
    return None


def _recent_author(latest: Revision | None) -> Actor:
    """Return the user of the newest config history entry written since ``latest``, if any."""
    from django.contrib.admin.models import LogEntry

    entries = LogEntry.objects.filter(content_type__app_label__in=("routing", "access"))
    if latest is not None:
        entries = entries.filter(action_time__gte=latest.created_at)
    entry = entries.select_related("user").order_by("-action_time", "-id").first()
    return entry.user if entry is not None else None


def _prune(newest: int) -> None:
    """Delete revisions both older than KEEP_DAYS and outside the last KEEP_COUNT."""
    cutoff = timezone.now() - timedelta(days=KEEP_DAYS)
    Revision.objects.filter(number__lte=newest - KEEP_COUNT, created_at__lt=cutoff).delete()


def on_config_committed(sender: object, version: int, **kwargs: object) -> None:
    """``config_committed`` receiver: record a revision; a failure is logged, never raised.

    The change is committed already; a history that could not be written must not
    turn the operator's successful save into an error.
    """
    try:
        revision_record(rollback_of=_rollback_of.get())
    except Exception as exc:
        logger.warning("config revision not recorded: %s", type(exc).__name__)


def connect() -> None:
    """Connect the recorder to ``config_committed`` (called from AppConfig.ready)."""
    config_committed.connect(on_config_committed, dispatch_uid="gateway-config-history")


# --- Reading --------------------------------------------------------------------------------


def revision_list() -> Sequence[Revision]:
    """Return every kept revision, newest first (without loading the documents)."""
    return list(Revision.objects.defer("document").order_by("-number"))


def revision_get(number: int) -> Revision | None:
    """Return revision ``number``, or None when there is none (never made or pruned)."""
    return Revision.objects.filter(number=number).first()


# --- Comparing ------------------------------------------------------------------------------


def document_diff(old: Mapping[str, object], new: Mapping[str, object]) -> dict[str, list[dict[str, object]]]:
    """Return what turns document ``old`` into ``new``, in the import's diff shape.

    ``{"created": [...], "updated": [...], "deleted": [...]}``; each item names its kind
    and natural key, and an update its changed ``fields`` with their ``values``
    (``{field: [old, new]}``), so a reader sees what changed, not only where.
    """
    diff = ImportDiff(dry_run=True)
    values: dict[int, dict[str, list[object]]] = {}
    for name in sorted(set(_lists(old)) | set(_lists(new))):
        _diff_rows(name, _rows(old, name), _rows(new, name), {}, diff, values)
    return {
        "created": [c.as_dict() for c in diff.created],
        "updated": [{**c.as_dict(), "values": values[id(c)]} for c in diff.updated],
        "deleted": [c.as_dict() for c in diff.deleted],
    }


def _lists(document: Mapping[str, object]) -> list[str]:
    return [name for name, value in document.items() if isinstance(value, list) and name in NATURAL_KEYS]


def _rows(parent: Mapping[str, object], name: str) -> dict[str, Mapping[str, object]]:
    key_field = NATURAL_KEYS[name][0]
    items = parent.get(name)
    rows: dict[str, Mapping[str, object]] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping):
            rows[str(item.get(key_field))] = item
    return rows


def _diff_rows(
    name: str,
    old: Mapping[str, Mapping[str, object]],
    new: Mapping[str, Mapping[str, object]],
    parent_key: Mapping[str, str],
    diff: ImportDiff,
    values: dict[int, dict[str, list[object]]],
) -> None:
    key_field, kind = NATURAL_KEYS[name]
    for natural in sorted(set(old) | set(new)):
        key = {**parent_key, key_field: natural}
        before, after = old.get(natural), new.get(natural)
        if before is None:
            diff.created.append(Change(kind, key))
        elif after is None:
            diff.deleted.append(Change(kind, key))
        else:
            changed = {
                field: [before.get(field), after.get(field)]
                for field in sorted(set(before) | set(after))
                if field not in NATURAL_KEYS and before.get(field) != after.get(field)
            }
            if changed:
                change = Change(kind, key, tuple(changed))
                diff.updated.append(change)
                values[id(change)] = changed
        child_key = {PARENT_KEY_NAMES.get(name, kind): natural}
        for child in NATURAL_KEYS:
            if (before and isinstance(before.get(child), list)) or (after and isinstance(after.get(child), list)):
                _diff_rows(child, _rows(before or {}, child), _rows(after or {}, child), child_key, diff, values)


def diff_summary(diff: Mapping[str, Sequence[Mapping[str, object]]]) -> str:
    """Return a one-line summary of a diff: ``updated service orders (default_url); created ...``."""
    parts = []
    for action in ("created", "updated", "deleted"):
        for item in diff.get(action, ()):
            key = item.get("key")
            named = "/".join(str(v) for v in key.values()) if isinstance(key, Mapping) else ""
            fields = item.get("fields")
            detail = f" ({', '.join(str(f) for f in fields)})" if isinstance(fields, list) and fields else ""
            parts.append(f"{action} {str(item.get('kind', '')).replace('_', ' ')} {named}{detail}")
    if not parts:
        return "no change"
    summary = "; ".join(parts[:6])
    return summary + (f"; and {len(parts) - 6} more" if len(parts) > 6 else "")


# --- Rolling back ---------------------------------------------------------------------------


@contextmanager
def _rolling_back_to(number: int) -> Iterator[None]:
    token = _rollback_of.set(number)
    try:
        yield
    finally:
        _rollback_of.reset(token)


def revision_rollback(revision: Revision, *, actor: Actor, dry_run: bool = False) -> ImportDiff:
    """Make the config equal to ``revision``'s document (the import: all or nothing); return the diff.

    The change is recorded as a new revision naming ``revision``; a rollback that
    changes nothing is recorded too. Raises ``config_io.ConfigInvalid`` (nothing
    changed) when the old document no longer applies, e.g. an application it lacks
    has API keys now.
    """
    with _rolling_back_to(revision.number):
        diff = config_import(revision.document, actor=actor, dry_run=dry_run)
    if not dry_run and diff.is_empty:
        revision_record(actor=actor, rollback_of=revision.number, force=True)
    return diff
