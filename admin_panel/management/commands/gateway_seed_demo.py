"""``manage.py gateway_seed_demo``: the quick start's demo configuration, seeded once."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import models, transaction

from access.models import Application, EndpointWhitelist, TokenIssuer
from access.services import api_key_create
from routing.models import ServiceConfig, ServiceVersion

DEMO_APPLICATION = "demo"
DEMO_ISSUER_URL = "http://127.0.0.1:7200"  # demo.auth.ISSUER
DEMO_ADMIN = "admin"

# (service_name, default_url, route_prefix, upstream_prefix); None: same as route_prefix.
DEMO_SERVICES: tuple[tuple[str, str, str, str | None], ...] = (
    ("monolith", "http://127.0.0.1:7000", "/api/v1", None),
    ("auth", "http://127.0.0.1:7200", "/api/v1/auth", "/api/auth"),
    ("pipeline", "http://127.0.0.1:7202", "/api/v1/pipelines", None),
    ("notifications", "queue://email", "/api/v1/notifications/email", None),
)

# (service_name, version, url, weight): two weighted versions of the pipeline to try a
# canary split (90/10 of unpinned traffic) and pins (X-Service-Version: v2) on the demo.
DEMO_VERSIONS: tuple[tuple[str, str, str, int], ...] = (
    ("pipeline", "v1", "http://127.0.0.1:7202", 90),
    ("pipeline", "v2", "http://127.0.0.1:7202", 10),
)

# (endpoint_path, allowed_methods, rate_limit per minute, is_public)
DEMO_WHITELIST: tuple[tuple[str, list[str], int | None, bool], ...] = (
    ("/api/v1/pipelines/*", [], 120, False),
    ("/api/v1/auth/*", [], 60, False),
    ("/api/v1/auth/login", ["POST"], 10, True),
    ("/api/v1/notifications/email", ["POST"], 30, False),
    ("/api/v1/*", ["GET", "HEAD"], 600, False),
)


def _create(model: type[models.Model], **fields: Any) -> Any:
    """Create a row through the same model validation as the admin and the API."""
    obj = model(**fields)
    obj.full_clean()
    obj.save()
    return obj


class Command(BaseCommand):
    help = (
        "Seed the quick start's demo configuration (four services, one application with a "
        "whitelist and an API key, a development superuser) once. Does nothing when the "
        "database already holds configuration or a superuser. Secrets are printed once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-superuser", action="store_true", help="Seed the gateway configuration only, no admin user."
        )

    def handle(self, *args: object, **options: Any) -> None:
        with transaction.atomic():
            plaintext = self.seed_config()
            password = None if options["no_superuser"] else self.seed_superuser()
        self.report(plaintext, password)

    def seed_config(self) -> str | None:
        """Create the demo services, application, whitelist and key; None if config exists."""
        if ServiceConfig.objects.exists() or Application.objects.exists():
            self.stdout.write("Gateway configuration present: the demo is seeded into an empty database only.")
            return None
        for name, url, route_prefix, upstream_prefix in DEMO_SERVICES:
            _create(
                ServiceConfig,
                service_name=name,
                default_url=url,
                route_prefix=route_prefix,
                upstream_prefix=upstream_prefix,
            )
        for service_name, version, url, weight in DEMO_VERSIONS:
            service = ServiceConfig.objects.get(service_name=service_name)
            _create(ServiceVersion, service=service, version=version, url=url, weight=weight)
            service.current_version = service.current_version or version
            service.full_clean()
            service.save()
        app = _create(
            Application,
            name=DEMO_APPLICATION,
            description="Quick-start demo client.",
            allowed_origins=["http://localhost:3000"],
        )
        for path, methods, rate_limit, is_public in DEMO_WHITELIST:
            _create(
                EndpointWhitelist,
                application=app,
                endpoint_path=path,
                allowed_methods=methods,
                rate_limit=rate_limit,
                is_public=is_public,
            )
        # The demo Auth upstream (demo/auth.py) signs users in; its tokens call as this application.
        _create(
            TokenIssuer,
            application=app,
            issuer=DEMO_ISSUER_URL,
            jwks_url=f"{DEMO_ISSUER_URL}/.well-known/jwks.json",
            audiences=["demo"],
            algorithms=["RS256"],
        )
        _, plaintext = api_key_create(application=app, name="demo key")
        return plaintext

    def seed_superuser(self) -> str | None:
        """Create the development superuser with a generated password; None if one exists."""
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("A superuser exists: no demo admin created.")
            return None
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(DEMO_ADMIN, email="", password=password)
        return password

    def report(self, plaintext: str | None, password: str | None) -> None:
        """Print what was created; the key and the password appear here and nowhere else."""
        out, bold = self.stdout.write, self.style.SUCCESS
        if plaintext is not None:
            out(bold("Demo configuration seeded:"))
            for name, url, route_prefix, upstream_prefix in DEMO_SERVICES:
                upstream_path = route_prefix if upstream_prefix is None else upstream_prefix
                if url.startswith("queue://"):
                    out(f"  {name:<14} POST {route_prefix:<30} -> {url}")
                else:
                    out(f"  {name:<14} {route_prefix + '/...':<35} -> {url}{upstream_path}/...")
            out("")
            out(bold(f"API key of application '{DEMO_APPLICATION}' (shown once, copy it now):"))
            out(f"  {plaintext}")
            out("Try, once everything runs:")
            out(f'  curl -H "X-API-Key: {plaintext}" http://localhost:4200/api/v1/pipelines')
            out("Or as the demo user, with a bearer token from the demo Auth API:")
            out(
                '  TOKEN=$(curl -s -H \'Content-Type: application/json\' -d \'{"username": "demo", '
                '"password": "demo"}\' http://localhost:4200/api/v1/auth/login'
                " | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')"
            )
            out('  curl -H "Authorization: Bearer $TOKEN" http://localhost:4200/api/v1/pipelines')
            out("Versions: the pipeline splits unpinned traffic 90/10 between v1 and v2; pin one with")
            out(
                f'  curl -i -H "X-API-Key: {plaintext}" -H "X-Service-Version: v2" http://localhost:4200/api/v1/pipelines'
            )
        if password is not None:
            out("")
            out(bold("Admin panel: http://localhost:4201/admin/ (password shown once, copy it now):"))
            out(f"  user: {DEMO_ADMIN}   password: {password}")
