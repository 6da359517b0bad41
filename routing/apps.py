"""App config for routing: services, versions, the compiled snapshot and the proxy."""

from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the config-revision model and the change signals of the five tables."""
        from routing import reload

        reload.connect_signals()
