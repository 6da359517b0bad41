"""manage.py gateway_import FILE [--dry-run]: make the config equal to a JSON or YAML document."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from admin_panel.config_io import ConfigInvalid, ImportDiff, config_import
from admin_panel.management.commands.gateway_export import is_yaml


class Command(BaseCommand):
    help = (
        "Apply a config document all-or-nothing: create, update and delete services, versions, "
        "applications and whitelist entries to match it. API keys are never touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="*.json, *.yaml / *.yml, or - for JSON on stdin.")
        parser.add_argument("--dry-run", action="store_true", help="Print the diff; change nothing.")
        parser.add_argument("--user", help="Staff username recorded in the admin history for each change.")

    def handle(self, *args: object, file: str, dry_run: bool, user: str | None, **options: object) -> None:
        document = self._read(file)
        actor = None
        if user:
            actor = get_user_model().objects.filter(username=user, is_staff=True).first()
            if actor is None:
                raise CommandError(f"No staff user named {user!r}.")
        try:
            diff = config_import(document, actor=actor, dry_run=dry_run)
        except ConfigInvalid as invalid:
            lines = "\n".join(f"  {problem}" for problem in invalid.problems)
            raise CommandError(f"{invalid}; nothing was changed:\n{lines}") from None
        self.stdout.write(json.dumps(diff.as_dict(), indent=2))
        self.stderr.write(self._summary(diff))

    def _read(self, file: str) -> object:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}") from None
        try:
            return yaml.safe_load(text) if is_yaml(file) else json.loads(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise CommandError(f"{file} is not valid {'YAML' if is_yaml(file) else 'JSON'}: {exc}") from None

    def _summary(self, diff: ImportDiff) -> str:
        verb = "Would apply" if diff.dry_run else "Applied"
        if diff.is_empty:
            return "No changes: the config already matches the document."
        counts = f"{len(diff.created)} created, {len(diff.updated)} updated, {len(diff.deleted)} deleted"
        return f"{verb}: {counts}" + (" (dry run, nothing changed)." if diff.dry_run else ".")
