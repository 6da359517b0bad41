"""Admin history entries that say what changed: each changed field with its old and new value.

Django's own message is "Changed Default url." — an audit cannot tell from what to
what. ``ChangeValuesMixin`` writes "Changed Default url: http://a → http://b." instead,
for the object's fields and for the rows of its inlines. Config values hold no secrets
(key hashes are never in a form); long values are shortened.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django import forms
from django.db import models
from django.http import HttpRequest

MAX_VALUE_CHARS = 120


def shown(value: object) -> str:
    """Return ``value`` as the history shows it: lists joined, empty as a dash, long ones shortened."""
    if isinstance(value, models.Model):
        text = str(value)
    elif isinstance(value, list | tuple):
        text = ", ".join(str(item) for item in value) or "(empty)"
    elif value is None or value == "":
        text = "(empty)"
    else:
        text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def value_change(label: str, old: object, new: object) -> str:
    """Return ``"Label: old → new"``: how every history entry names one changed value."""
    return f"{label}: {shown(old)} → {shown(new)}"


def history_text(lines: list[str]) -> str:
    """Return the history entry made of ``lines`` ("Changed A: x → y. Changed B: ...")."""
    return ". ".join(lines) + "."


def field_changes(form: forms.BaseForm) -> list[str]:
    """Return ``"Label: old → new"`` for each field ``form`` changed."""
    changes = []
    for name in form.changed_data:
        field = form.fields.get(name)
        label = str(field.label) if field is not None and field.label else name.replace("_", " ").capitalize()
        old = form.initial.get(name)
        if isinstance(field, forms.ModelChoiceField) and old is not None:
            old = field.queryset.filter(pk=old).first() or old
        changes.append(value_change(label, old, form.cleaned_data.get(name)))
    return changes


def inline_changes(formsets: Iterable[Any]) -> list[str]:
    """Return a line per row an inline formset added, changed (with values) or deleted."""
    lines = []
    for formset in formsets:
        kind = str(formset.model._meta.verbose_name)
        lines += [f"Added {kind} “{obj}”" for obj in getattr(formset, "new_objects", [])]
        for form in formset.initial_forms:
            obj = form.instance
            if form in getattr(formset, "deleted_forms", []) or not form.has_changed():
                continue
            changes = field_changes(form)
            if changes:
                lines.append(f"Changed {kind} “{obj}”: {'; '.join(changes)}")
        lines += [f"Deleted {kind} “{obj}”" for obj in getattr(formset, "deleted_objects", [])]
    return lines


class ChangeValuesMixin:
    """A ModelAdmin mixin: change history entries name old and new values."""

    def construct_change_message(
        self, request: HttpRequest, form: forms.ModelForm, formsets: Iterable[Any], add: bool = False
    ) -> str | list[Mapping[str, object]]:
        if add:
            return super().construct_change_message(request, form, formsets, add)  # type: ignore[misc]  # ModelAdmin's
        lines = [f"Changed {change}" for change in field_changes(form)] + inline_changes(formsets)
        if not lines:
            return super().construct_change_message(request, form, formsets, add)  # type: ignore[misc]  # ModelAdmin's
        return history_text(lines)
