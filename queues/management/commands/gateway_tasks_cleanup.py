"""manage.py gateway_tasks_cleanup: delete task records older than GATEWAY_TASK_TTL_HOURS."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from queues.tasks import cleanup_expired


class Command(BaseCommand):
    help = (
        "Delete task status records untouched for GATEWAY_TASK_TTL_HOURS (default 72) and old "
        "filesystem-broker files. Workers also do this hourly; run it from cron when no worker runs."
    )

    def handle(self, *args: object, **options: object) -> None:
        deleted = cleanup_expired()
        self.stdout.write(f"Deleted {deleted} expired task record(s).")
