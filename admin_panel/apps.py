"""App config for the admin panel (port 4201), the admin REST API, roles and config history."""

from django.apps import AppConfig


class AdminPanelConfig(AppConfig):
    name = "admin_panel"
    verbose_name = "Configuration"  # the section of the config history in the admin's app list
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from admin_panel import revisions, roles

        roles.connect(self)
        revisions.connect()
