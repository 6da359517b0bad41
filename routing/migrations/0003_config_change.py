from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('routing', '0002_config_revision'),
    ]

    operations = [
        migrations.CreateModel(
            name='ConfigChange',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('version', models.BigIntegerField(db_index=True)),
                ('token', models.CharField(max_length=32)),
                ('kind', models.CharField(max_length=16)),
                ('object_id', models.CharField(blank=True, default='', max_length=64)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'verbose_name': 'configuration change',
                'db_table': 'gateway_config_change',
            },
        ),
    ]
