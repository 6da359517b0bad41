"""Who is calling and whether they may: the SPEC §4.5 decisions, in its order.

``identify_caller`` (401s), then ``authorize_endpoint`` (401 missing key, 403 service /
endpoint), and after the version is chosen ``authorize_version`` (403 version). Each
reads only the request context and its snapshot: no database, no settings, and no
argon2 for a key already verified (see ``access.keys``).
"""

from __future__ import annotations

from collections.abc import Iterable

from access import usage
from access.keys import KeyOutcome, key_split, key_verifier, prefix_shaped
from access.tokens import identify_bearer
from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError
from gateway_core.snapshot import CompiledApplication, CompiledEntry

API_KEY_META = "HTTP_X_API_KEY"


def identify_caller(ctx: RequestContext) -> None:
    """Verify ``X-API-Key``, else a bearer token; set ``ctx.application`` (and the key or user).

    A key, when sent, alone identifies the caller: ``Authorization`` is then not
    examined (it passes upstream whatever it holds). Without a key, ``Authorization:
    Bearer`` is verified by ``access.tokens`` (401 ``invalid_token`` / ``expired_token``,
    503 ``issuer_unavailable``). Neither: nothing to do (``authorize_endpoint`` decides
    whether a credential was needed). Raises 401 ``invalid_api_key`` for a malformed,
    unknown, wrong or revoked key or one whose application is inactive, 401
    ``expired_api_key`` for an expired one.
    """
    presented = ctx.request.META.get(API_KEY_META)
    if presented is None:
        identify_bearer(ctx)
        return
    parts = key_split(presented)
    if parts is not None and prefix_shaped(parts[0]):
        ctx.key_prefix = parts[0]  # names the key in the access log, valid or not; never the secret
    verdict = key_verifier().check(presented, ctx.snapshot.keys, ctx.client_ip)
    key = verdict.key
    if verdict.outcome is KeyOutcome.INVALID or key is None:
        headers = {"Retry-After": str(verdict.retry_after_s)} if verdict.retry_after_s else None
        raise GatewayError(401, ErrorCode.INVALID_API_KEY, "The API key is not valid.", headers)
    application = ctx.snapshot.applications.get(key.application_id)
    if application is None:
        # Keys of inactive applications are not compiled; this guards a partial record.
        raise GatewayError(401, ErrorCode.INVALID_API_KEY, "The API key is not valid.")
    if verdict.outcome is KeyOutcome.EXPIRED:
        raise GatewayError(401, ErrorCode.EXPIRED_API_KEY, "The API key has expired.")
    ctx.api_key = key
    ctx.application = application
    usage.key_used(key.id)


def authorize_endpoint(ctx: RequestContext) -> None:
    """Find the whitelist entry that allows path + method; set ``ctx.entry``/``ctx.entry_owner``.

    A caller's own entries are preferred (their rate limit is the caller's); a public
    entry of any application is open to everyone. Raises 401 ``missing_api_key``
    (no key, no public entry), 403 ``service_not_allowed`` or 403 ``endpoint_not_allowed``.
    """
    method = ctx.request.method or "GET"
    application = ctx.application
    if application is not None and _service_allowed(ctx, application):
        entry = _first_match(ctx, application.entries_for(ctx.path), method)
        if entry is not None:
            ctx.entry, ctx.entry_owner = entry, application
            return
    public = _first_match(ctx, ctx.snapshot.public_entries_for(ctx.path), method)
    if public is not None:
        ctx.entry = public
        ctx.entry_owner = ctx.snapshot.applications.get(public.application_id)
        return
    if application is None:
        raise GatewayError(401, ErrorCode.MISSING_API_KEY, "This endpoint needs an API key in X-API-Key.")
    if not _service_allowed(ctx, application):
        raise GatewayError(403, ErrorCode.SERVICE_NOT_ALLOWED, "This application may not call this service.")
    raise GatewayError(403, ErrorCode.ENDPOINT_NOT_ALLOWED, "This application may not call this endpoint.")


def authorize_version(ctx: RequestContext) -> None:
    """Refuse a resolved version the caller's application or the entry does not allow: 403."""
    if ctx.version is not None and not version_allowed(ctx, ctx.version.version):
        raise GatewayError(403, ErrorCode.VERSION_NOT_ALLOWED, "This application may not use this service version.")


def version_allowed(ctx: RequestContext, version: str) -> bool:
    """Return True when the matched entry and the caller's application allow ``version``.

    The application is the key's, or for an anonymous call the public entry's owner
    (the rule ``routing.versions.choose_version`` applies to the weighted choice).
    Empty lists allow every version; ``default`` (the service's ``default_url``) must
    be listed like any other name when a list is not empty. Before
    ``authorize_endpoint`` has matched an entry, every version is allowed.
    """
    entry = ctx.entry
    if entry is not None and entry.versions and version not in entry.versions:
        return False
    application = ctx.caller_application()
    return application is None or not application.allowed_versions or version in application.allowed_versions


def _service_allowed(ctx: RequestContext, application: CompiledApplication) -> bool:
    if not application.allowed_services or ctx.route is None:
        return True
    return ctx.route.service_name in application.allowed_services


def _first_match(ctx: RequestContext, entries: Iterable[CompiledEntry], method: str) -> CompiledEntry | None:
    """Return the first (most specific) entry matching path + method.

    With a pinned version an entry allowing it is preferred, so two entries for one
    path that differ only by version list both work.
    """
    pinned = ctx.pinned_version
    fallback: CompiledEntry | None = None
    for entry in entries:
        if not entry.allows_method(method) or not entry.pattern.matches(ctx.path):
            continue
        if pinned is None or not entry.versions or pinned in entry.versions:
            return entry
        if fallback is None:
            fallback = entry
    return fallback
