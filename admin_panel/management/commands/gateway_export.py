"""manage.py gateway_export FILE: write the whole config as JSON (YAML for .yaml/.yml; - for stdout)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandParser

from admin_panel.config_io import config_export


def is_yaml(path: str) -> bool:
    return path.lower().endswith((".yaml", ".yml"))


def config_dump(document: object, path: str) -> str:
    """Render ``document`` as YAML when ``path`` ends in .yaml/.yml, else as JSON."""
    if is_yaml(path):
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


class Command(BaseCommand):
    help = "Export services, versions, applications, whitelists and key metadata (no hashes) to FILE."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Where to write: *.json, *.yaml / *.yml, or - for JSON on stdout.")

    def handle(self, *args: object, file: str, **options: object) -> None:
        text = config_dump(config_export(), file)
        if file == "-":
            sys.stdout.write(text)
            return
        Path(file).write_text(text, encoding="utf-8")
        self.stderr.write(f"Wrote the gateway config to {file}.")
