"""App config for routing: services, versions, the compiled snapshot and the proxy."""

from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect the change signals of the config tables, and metrics to snapshot swaps."""
        from gateway_core import metrics
        from gateway_core.snapshot import snapshot_installed
        from routing import reload

        reload.connect_signals()
        snapshot_installed.connect(metrics.on_snapshot_installed, dispatch_uid="gateway-metrics-snapshot")
