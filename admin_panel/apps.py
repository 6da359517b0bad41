"""App config for the admin panel (port 4201) and the admin REST API."""

from django.apps import AppConfig


class AdminPanelConfig(AppConfig):
    name = "admin_panel"
    verbose_name = "Admin panel"
    default_auto_field = "django.db.models.BigAutoField"
