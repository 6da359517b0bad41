"""Validated saves of configuration rows, each recorded in the Django admin's history.

Every config write service (routing/services.py, access/services.py, the config
import) ends here, so the admin UI, the REST API, imports and commands refuse the
same input (``full_clean()``: the models are the one source of truth) and leave the
same audit trail: a ``LogEntry`` naming the user and each changed field with its old
and new value ("Changed Default url: http://a → http://b."), shown in the admin's
"History" of the object exactly like a change made in the UI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import DataError, IntegrityError, models, transaction
from django.dispatch import Signal
from django.utils.text import capfirst

from gateway_core.admin_history import history_text, value_change

logger = logging.getLogger("gateway.audit")

Actor = AbstractBaseUser | None

# Sent once per committed config change, after the version bump (``version``: the new one).
# The config history (admin_panel.revisions) records a revision from it.
config_committed = Signal()


def model_create(instance: models.Model, *, actor: Actor) -> models.Model:
    """Validate and insert ``instance``; record an addition by ``actor``.

    Raises ``ValidationError`` (field → messages) for invalid input, a duplicate,
    or a value the database refuses.
    """
    _validated_save(instance)
    audit_record(instance, action_flag=ADDITION, actor=actor, message=[{"added": {}}])
    return instance


def model_update(instance: models.Model, *, fields: Mapping[str, object], actor: Actor) -> list[str]:
    """Set ``fields`` on ``instance``, validate and save; return the names of the fields that changed.

    Nothing is written (and nothing recorded) when no value changes. The history
    entry names each changed field with its old and new value, as the admin UI's do.
    """
    changed = [name for name, value in fields.items() if getattr(instance, name) != value]
    old_values = {name: getattr(instance, name) for name in changed}
    for name in changed:
        setattr(instance, name, fields[name])
    if not changed:
        return []
    _validated_save(instance)
    lines = []
    for name in changed:
        label = str(capfirst(instance._meta.get_field(name).verbose_name))
        lines.append("Changed " + value_change(label, old_values[name], getattr(instance, name)))
    audit_record(instance, action_flag=CHANGE, actor=actor, message=history_text(lines))
    return changed


def model_delete(instance: models.Model, *, actor: Actor) -> None:
    """Delete ``instance`` (and what cascades from it); record a deletion by ``actor``."""
    audit_record(instance, action_flag=DELETION, actor=actor, message=[])
    instance.delete()


def audit_record(
    instance: models.Model, *, action_flag: int, actor: Actor, message: list[dict[str, object]] | str
) -> None:
    """Add a ``LogEntry`` for ``instance``; without an actor (a shell command run) only log it.

    ``message`` is the admin's JSON change-message format (rendered "Changed Is active.")
    or the text the history shows as it is, as ``ChangeValuesMixin`` writes it.
    """
    if actor is None or actor.pk is None:
        logger.info(
            "config change without a user",
            extra={
                "model": instance._meta.label,
                "object_id": str(instance.pk),
                "action_flag": action_flag,
                **({"change": message} if isinstance(message, str) else {}),
            },
        )
        return
    LogEntry.objects.create(
        user_id=actor.pk,
        content_type=ContentType.objects.get_for_model(instance, for_concrete_model=False),
        object_id=str(instance.pk),
        object_repr=str(instance)[:200],
        action_flag=action_flag,
        change_message=message if isinstance(message, str) else json.dumps(message),
    )


def _validated_save(instance: models.Model) -> None:
    instance.full_clean()
    try:
        # A savepoint, so a refused row leaves an enclosing transaction usable.
        with transaction.atomic():
            instance.save()
    except IntegrityError:
        # full_clean() checked uniqueness; a concurrent writer got there first.
        raise ValidationError({NON_FIELD_ERRORS: ["This conflicts with an existing object."]}) from None
    except DataError:
        raise ValidationError({NON_FIELD_ERRORS: ["A value is out of range for the database."]}) from None
