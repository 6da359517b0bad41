"""manage.py gateway_reload: make every gateway process reload its configuration now."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from routing import reload


class Command(BaseCommand):
    help = "Bump the configuration version and notify every gateway process to reload it."

    def handle(self, *args: object, **options: object) -> None:
        version = reload.reload_now()
        self.stdout.write(f"Configuration version is now {version}; every gateway process was notified.")
