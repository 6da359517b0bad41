"""The per-request state the pipeline steps read and fill in (SPEC §4)."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.http import HttpRequest, HttpResponse

from gateway_core.snapshot import (
    CompiledApplication,
    CompiledEntry,
    CompiledKey,
    CompiledRoute,
    CompiledVersion,
    Snapshot,
)


@dataclass(slots=True)
class RateDecision:
    """The rate-limit outcome for this request, rendered as RateLimit-* headers."""

    limit: int
    remaining: int
    reset_s: int
    allowed: bool


@dataclass(slots=True)
class RequestContext:
    """What the pipeline knows about one request, filled in step by step."""

    request: HttpRequest
    snapshot: Snapshot
    started_at: float  # time.perf_counter() at arrival
    request_id: str = ""
    path: str = ""  # percent-decoded, checked safe (§4.2)
    raw_path: str = ""  # as received, for forwarding unchanged
    client_ip: str = ""
    route: CompiledRoute | None = None
    rest_path: str = ""  # raw path after route_prefix
    pinned_version: str | None = None  # from X-Service-Version
    version: CompiledVersion | None = None  # resolved target (default_url as version "default")
    api_key: CompiledKey | None = None  # a verified, valid key, when one was sent
    application: CompiledApplication | None = None  # the caller's application (from the key or token)
    key_prefix: str = ""  # the prefix of the X-API-Key sent, valid or not (never the secret), for the log
    user: str | None = None  # the end user of a verified bearer token (SPEC §4.5a)
    scopes: frozenset[str] = frozenset()  # the scopes that token holds
    entry: CompiledEntry | None = None  # the whitelist entry that allowed the request
    entry_owner: CompiledApplication | None = None  # the application owning ``entry``
    rate: RateDecision | None = None
    response_headers: dict[str, str] = field(default_factory=dict)  # added by steps (CORS, ...)
    upstream: str = ""  # base URL or queue://name actually used, for the access log
    fallback_used: bool = False
    response: HttpResponse | None = None  # set by a step that answers itself (a CORS preflight)

    def caller_application(self) -> CompiledApplication | None:
        """The application whose version rules apply (SPEC §4.4).

        The caller's own (its key's or token's); for an anonymous call on a public
        entry, the entry's owner. The weighted choice and the version check both use it.
        """
        return self.application or self.entry_owner
