import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    """The config history table; the three roles are kept by admin_panel.roles after migrate."""

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Revision",
            fields=[
                ("number", models.PositiveBigIntegerField(primary_key=True, serialize=False)),
                ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                ("username", models.CharField(blank=True, default="", max_length=150)),
                ("summary", models.CharField(blank=True, default="", max_length=500)),
                (
                    "rollback_of",
                    models.PositiveBigIntegerField(blank=True, help_text="The revision rolled back to.", null=True),
                ),
                ("document", models.JSONField()),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "config revision",
                "verbose_name_plural": "config history",
                "db_table": "gateway_config_history",
                "ordering": ["-number"],
            },
        ),
    ]
