"""Small data builders for tests: every object goes through ``full_clean()`` like the admin does.

Each builder saves one row and returns it; call them inside a test that has database
access (``db`` or ``transactional_db`` — the latter when a live gateway must see the data).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from access.models import ApiKey, Application, EndpointWhitelist
from access.services import api_key_create
from routing.models import ServiceConfig, ServiceVersion


def make_service(
    name: str,
    url: str,
    *,
    route_prefix: str | None = None,
    upstream_prefix: str | None = None,
    versions: Iterable[tuple[str, str] | tuple[str, str, int] | dict[str, object]] = (),
    **fields: object,
) -> ServiceConfig:
    """Create a service with ``default_url=url`` and its ``versions``.

    A version is ``(name, url)``, ``(name, url, weight)`` or a dict of ServiceVersion
    fields. ``route_prefix`` defaults to ``/api/v1/<name>``; ``upstream_prefix`` None
    means "same as the route prefix", "" strips it.
    """
    service = ServiceConfig(
        service_name=name,
        default_url=url,
        route_prefix=route_prefix or "",
        upstream_prefix=upstream_prefix,
        **fields,
    )
    service.full_clean()
    service.save()
    for spec in versions:
        if isinstance(spec, dict):
            make_version(service, **spec)  # type: ignore[arg-type]  # fields checked by full_clean
        else:
            make_version(service, *spec)
    return service


def make_version(
    service: ServiceConfig, version: str, url: str, weight: int = 100, *, is_active: bool = True
) -> ServiceVersion:
    """Create one version of ``service``."""
    row = ServiceVersion(service=service, version=version, url=url, weight=weight, is_active=is_active)
    row.full_clean()
    row.save()
    return row


def make_app(
    name: str,
    *,
    entries: Sequence[dict[str, object]] = (),
    allowed_services: Sequence[str] = (),
    allowed_versions: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
    **fields: object,
) -> Application:
    """Create an application; each item of ``entries`` is ``make_entry`` keyword arguments plus ``path``."""
    app = Application(
        name=name,
        allowed_services=list(allowed_services),
        allowed_versions=list(allowed_versions),
        allowed_origins=list(allowed_origins),
        **fields,
    )
    app.full_clean()
    app.save()
    for entry in entries:
        spec = dict(entry)
        make_entry(app, str(spec.pop("path")), **spec)  # type: ignore[arg-type]  # make_entry kwargs
    return app


def make_entry(
    app: Application,
    path: str,
    *,
    methods: Sequence[str] = (),
    versions: Sequence[str] = (),
    rate_limit: int | None = None,
    is_public: bool = False,
) -> EndpointWhitelist:
    """Create a whitelist entry of ``app`` for the pattern ``path``."""
    entry = EndpointWhitelist(
        application=app,
        endpoint_path=path,
        allowed_methods=list(methods),
        allowed_versions=list(versions),
        rate_limit=rate_limit,
        is_public=is_public,
    )
    entry.full_clean()
    entry.save()
    return entry


def make_key(
    app: Application, *, name: str = "test key", expires_at: datetime | None = None, is_active: bool = True
) -> tuple[ApiKey, str]:
    """Create an API key of ``app`` through the service; return it with its plaintext."""
    key, plaintext = api_key_create(application=app, name=name, expires_at=expires_at)
    if not is_active:
        key.is_active = False
        key.save(update_fields=["is_active", "updated_at"])
    return key, plaintext


def make_public_app(path: str = "/api/v1/*", *, name: str = "public", **entry_fields: object) -> Application:
    """Create an application whose public entry opens ``path`` to every caller."""
    return make_app(name, entries=[{"path": path, "is_public": True, **entry_fields}])
