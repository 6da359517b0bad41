"""Forward a request to its HTTP upstream and stream the answer back (SPEC §4.7-§4.9).

Options and their defaults (SPEC §4.8, §4.9; ``GATEWAY_*`` environment variables):

- connect timeout ``GATEWAY_CONNECT_TIMEOUT_MS`` (5000): refused / DNS / TLS / connect
  timeout are "nothing reached the upstream" and are retried once on ``fallback_url``;
- read timeout ``timeout_ms`` of the service, else ``GATEWAY_UPSTREAM_TIMEOUT_MS``
  (30000): 504, retried on the fallback only for idempotent methods without a body
  already sent;
- request body cap ``GATEWAY_MAX_BODY_BYTES`` (10 MiB), counted while streaming;
- circuit breaker ``GATEWAY_BREAKER_FAILURES`` (5) in a row, open ``GATEWAY_BREAKER_OPEN_S`` (30).

Faithfulness: the raw path and query are sent byte for byte, bodies are neither
decoded nor decompressed, redirects are returned (never followed), every
``Set-Cookie`` stays a separate header, and no cookie is ever stored between
clients. Bodies stream both ways in 64 KiB blocks.

One ``requests`` session per process owns the connection pools (its adapter's pool
manager, TLS verification against requests' CA bundle, no environment proxies, a
cookie jar that refuses everything). A request borrows a connection from that pool
(urllib3 connects it, with TLS, and checks a kept-alive one is still open) and the
exchange itself is written and parsed by ``routing.http1``: requests' per-request
wrapping (URL re-parsing, pool-key building, header and cookie-jar copies) and
http.client's header handling (a validated write per header, the ``email`` parser
for the answer) were most of a proxied request's CPU in our profile, and
``Session.send`` would also read a redirect's body to follow it.
"""

from __future__ import annotations

import http.cookiejar
import logging
import os
import socket
import ssl
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Final
from urllib.parse import urlsplit

import requests
import urllib3
from django.http import HttpResponse, StreamingHttpResponse
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ClosedPoolError, ConnectTimeoutError, NewConnectionError

from gateway_core.client_ip import is_trusted_proxy
from gateway_core.conf import GatewayConfig, gateway_config
from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError
from routing.breaker import CircuitBreaker
from routing.http1 import Answer, InvalidAnswer, NoAnswer, read_answer, request_head, send_request
from routing.matcher import raw_target

logger = logging.getLogger("gateway.proxy")

CHUNK_BYTES: Final = 64 * 1024
# Connections kept per upstream host and worker: enough for a gevent worker's
# concurrent requests to one upstream without reconnecting under load.
POOL_MAXSIZE: Final = 256
# Upstream hosts whose pools are kept (far more than a config names, so none is evicted).
POOL_HOSTS: Final = 1024

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Request headers the gateway rewrites or must never pass on (a client cannot
# impersonate the gateway: X-Consumer-*, X-Gateway-*, X-Service-Key are ours).
REQUEST_DROP: Final = frozenset(
    {
        "host",
        "x-api-key",
        "x-service-key",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
        "expect",  # gunicorn already answered 100-continue to the client
        "content-length",  # re-added as is, with its canonical name
    }
)
GATEWAY_HEADER_PREFIXES: Final = ("x-consumer-", "x-gateway-")
# gunicorn always writes its own Date and Server; passing the upstream's would duplicate them.
RESPONSE_DROP: Final = frozenset({"x-api-key", "date", "server"})
# A chunked answer is passed on de-chunked: a Content-Length beside it would not describe it.
RESPONSE_DROP_CHUNKED: Final = RESPONSE_DROP | {"content-length"}
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


# --- Headers ------------------------------------------------------------------------------


def filter_hop_by_hop(
    headers: Iterable[tuple[str, str]],
    drop: frozenset[str] = frozenset(),
    drop_prefixes: tuple[str, ...] = (),
) -> list[tuple[str, str]]:
    """Return the end-to-end headers of ``headers``, in order, duplicates kept.

    Removes the hop-by-hop headers (SPEC §4.7: ``Connection`` and every header it
    names, ``Keep-Alive``, ``Proxy-*``, ``TE``, ``Trailer``, ``Transfer-Encoding``,
    ``Upgrade``) plus the lower-case names in ``drop`` and names starting with
    ``drop_prefixes``. Used for both directions.
    """
    headers = list(headers)
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(","))
    kept = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in named or _always_dropped(lowered, drop, drop_prefixes):
            continue
        kept.append((name, value))
    return kept


def _always_dropped(lowered: str, drop: frozenset[str], drop_prefixes: tuple[str, ...]) -> bool:
    """Return True for a hop-by-hop name, a name in ``drop`` or one starting with ``drop_prefixes``."""
    return (
        lowered in HOP_BY_HOP
        or lowered.startswith("proxy-")
        or lowered in drop
        or bool(drop_prefixes and lowered.startswith(drop_prefixes))
    )


@lru_cache(maxsize=512)
def _header_name(meta_key: str) -> str:
    return meta_key.replace("_", "-").title()


def client_headers(meta: Mapping[str, object]) -> list[tuple[str, str]]:
    """Return the request headers of a WSGI environ as ``(Name, value)`` pairs."""
    headers = []
    for key, value in meta.items():
        if key.startswith("HTTP_"):
            headers.append((_header_name(key[5:]), str(value)))
        elif key == "CONTENT_TYPE" and value:
            headers.append(("Content-Type", str(value)))
        elif key == "CONTENT_LENGTH" and value:
            headers.append(("Content-Length", str(value)))
    return headers


@lru_cache(maxsize=1024)
def _forwarded_name(meta_key: str) -> str | None:
    """Return the header name of an ``HTTP_*`` environ key when the header may go upstream, else None."""
    name = _header_name(meta_key[5:])
    return None if _always_dropped(name.lower(), REQUEST_DROP, GATEWAY_HEADER_PREFIXES) else name


def upstream_request_headers(ctx: RequestContext, netloc: str, config: GatewayConfig) -> dict[str, str]:
    """Return the headers to send upstream (SPEC §4.7).

    The same result as ``filter_hop_by_hop(client_headers(meta), REQUEST_DROP,
    GATEWAY_HEADER_PREFIXES)`` plus the gateway's own headers, in one pass over the
    environ: the fixed part of the decision is remembered per header name.
    """
    meta = ctx.request.META
    connection = meta.get("HTTP_CONNECTION")
    named = {token.strip().lower() for token in connection.split(",")} if connection else None
    headers: dict[str, str] = {}
    for key, value in meta.items():
        if key.startswith("HTTP_"):
            name = _forwarded_name(key)
            if name is not None and (named is None or name.lower() not in named):
                headers[name] = value
    content_type = meta.get("CONTENT_TYPE")
    if content_type and (named is None or "content-type" not in named):
        headers["Content-Type"] = content_type
    peer = str(meta.get("REMOTE_ADDR", ""))
    prior = meta.get("HTTP_X_FORWARDED_FOR")
    trusted = is_trusted_proxy(peer, config.trusted_proxies)
    headers["Host"] = netloc
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = str(
        (trusted and meta.get("HTTP_X_FORWARDED_PROTO")) or meta.get("wsgi.url_scheme", "http")
    )
    forwarded_host = (trusted and meta.get("HTTP_X_FORWARDED_HOST")) or meta.get("HTTP_HOST")
    if forwarded_host:
        headers["X-Forwarded-Host"] = str(forwarded_host)
    headers["X-Request-ID"] = ctx.request_id
    if ctx.api_key is not None:
        headers["X-Consumer-ID"] = ctx.api_key.application_id
        if ctx.application is not None:
            headers["X-Consumer-Name"] = wire_text(ctx.application.name)
    if ctx.route is not None and ctx.route.service_key:
        headers["X-Service-Key"] = ctx.route.service_key
    length = meta.get("CONTENT_LENGTH")
    if length:
        headers["Content-Length"] = str(length)
    return headers


def wire_text(value: str) -> str:
    """Return ``value`` as its UTF-8 bytes held in a Latin-1 string (how header values travel)."""
    return value if value.isascii() else value.encode("utf-8").decode("latin-1")


# --- Request bodies -----------------------------------------------------------------------


def reject_large_body(ctx: RequestContext) -> None:
    """Refuse a body whose Content-Length exceeds the cap, before anything is forwarded: 413."""
    length = ctx.request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > gateway_config().max_body_bytes:
        raise _too_large()


def _too_large() -> GatewayError:
    return GatewayError(413, ErrorCode.PAYLOAD_TOO_LARGE, "The request body is larger than the gateway accepts.")


class BodyStream:
    """The client's request body as a file-like object, counted against the cap as it streams."""

    def __init__(self, stream: object, limit_bytes: int) -> None:
        self.stream = stream
        self.limit_bytes = limit_bytes
        self.sent_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.stream.read(size if size and size > 0 else CHUNK_BYTES)  # type: ignore[attr-defined]  # wsgi.input
        self.sent_bytes += len(data)
        if self.sent_bytes > self.limit_bytes:
            raise _too_large()
        return data


def request_body(meta: Mapping[str, object], config: GatewayConfig) -> BodyStream | None:
    """Return the streamed body, or None when the request has none."""
    length = meta.get("CONTENT_LENGTH")
    chunked = "chunked" in str(meta.get("HTTP_TRANSFER_ENCODING", "")).lower()
    if not chunked and not length:
        return None
    return BodyStream(meta["wsgi.input"], config.max_body_bytes)


# --- The session ----------------------------------------------------------------------------


class RejectAllCookies(http.cookiejar.DefaultCookiePolicy):
    """A cookie policy that stores and returns nothing: upstream cookies belong to the client."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: object) -> bool:
        return False


def new_session() -> requests.Session:
    """Return a Session for one process: no env proxies, no cookie jar, no retries, big pools."""
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = 0
    session.cookies.set_policy(RejectAllCookies())
    adapter = HTTPAdapter(pool_connections=POOL_HOSTS, pool_maxsize=POOL_MAXSIZE, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_session: requests.Session | None = None
_session_pid = 0
_breaker: CircuitBreaker | None = None


def session() -> requests.Session:
    """Return this process's session (a new one after a fork: pools are not shared)."""
    global _session, _session_pid
    if _session is None or _session_pid != os.getpid():
        _session, _session_pid = new_session(), os.getpid()
        _pools.clear()
    return _session


_pools: dict[str, urllib3.HTTPConnectionPool] = {}


def upstream_pool(origin: str) -> urllib3.HTTPConnectionPool:
    """Return the session's connection pool for ``origin`` (``scheme://host:port``).

    The pool comes from the session's adapter with the adapter's own TLS settings
    (certificate verification against requests' CA bundle); it is looked up once per
    origin instead of once per request.
    """
    owner = session()  # first: a new process starts with an empty cache
    pool = _pools.get(origin)
    if pool is None:
        adapter = owner.get_adapter(origin)
        probe = PreparedRequest()
        probe.url = origin + "/"
        # Certificates are always verified: against GATEWAY_UPSTREAM_CA_BUNDLE, else requests' bundle.
        verify = gateway_config().upstream_ca_bundle or True
        host_params, pool_kwargs = adapter.build_connection_pool_key_attributes(probe, verify=verify)
        pool = adapter.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)
        _pools[origin] = pool
    return pool


def breaker() -> CircuitBreaker:
    """Return this process's circuit breaker."""
    global _breaker
    if _breaker is None:
        config = gateway_config()
        _breaker = CircuitBreaker(config.breaker_failures, config.breaker_open_s)
    return _breaker


# --- Forwarding -----------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def split_base(url: str) -> tuple[str, str, str]:
    """Return ``(scheme://netloc, path without trailing /, netloc)`` of an upstream base URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/"), parts.netloc


class UpstreamFailure(Exception):
    """The upstream could not be used. ``reached``: the request may have reached it."""

    def __init__(self, error: GatewayError, *, reached: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.reached = reached


def forward(ctx: RequestContext) -> HttpResponse:
    """Send the request to ``ctx.version``'s URL (or the fallback) and return the streamed answer.

    Raises GatewayError 502 ``upstream_unavailable``, 504 ``upstream_timeout``,
    503 ``circuit_open`` or 413 ``payload_too_large`` (SPEC §4.8, §4.9).
    """
    route, version = ctx.route, ctx.version
    assert route is not None and version is not None  # noqa: S101 - resolved by the pipeline
    config = gateway_config()
    meta = ctx.request.META
    _, query = raw_target(meta)
    path = route.upstream_prefix + ctx.rest_path
    body = request_body(meta, config)
    fallback = route.fallback_url if route.fallback_url and not route.fallback_url.startswith("queue://") else None
    circuits = breaker()

    if circuits.allow(version.url):
        try:
            return _send(ctx, version.url, path, query, body, route.timeout_ms, config)
        except UpstreamFailure as failure:
            retry = fallback is not None and (
                not failure.reached
                or (ctx.request.method in IDEMPOTENT_METHODS and (body is None or body.sent_bytes == 0))
            )
            if not retry or not circuits.allow(fallback):  # type: ignore[arg-type]  # retry implies a fallback
                raise failure.error from None
    elif fallback is None or not circuits.allow(fallback):
        raise GatewayError(503, ErrorCode.CIRCUIT_OPEN, "The upstream is failing; requests are paused briefly.")
    assert fallback is not None  # noqa: S101 - both branches above reach here only with a fallback
    ctx.fallback_used = True
    try:
        response = _send(ctx, fallback, path, query, body, route.timeout_ms, config)
    except UpstreamFailure as failure:
        raise failure.error from None
    response["X-Gateway-Fallback"] = "1"
    return response


def _send(
    ctx: RequestContext,
    base_url: str,
    path: str,
    query: str | None,
    body: BodyStream | None,
    timeout_ms: int | None,
    config: GatewayConfig,
) -> HttpResponse:
    origin, base_path, netloc = split_base(base_url)
    target = (base_path + path) or "/"
    if query is not None:
        target += "?" + query
    headers = upstream_request_headers(ctx, netloc, config)
    method = ctx.request.method or "GET"
    ctx.upstream = base_url
    chunked = body is not None and "Content-Length" not in headers
    if chunked:  # the client sent its body in chunks: so do we, re-framed as it streams
        headers["Transfer-Encoding"] = "chunked"
    try:
        head = request_head(method, target, list(headers.items()))
    except ValueError:
        logger.warning("request head not forwardable: a header contains a line break", extra=_log_extra(ctx))
        raise UpstreamFailure(_unavailable(), reached=False) from None
    read_timeout_s = (timeout_ms or config.upstream_timeout_ms) / 1000
    circuits = breaker()
    for attempt in range(2):
        lease = Lease(origin)
        reused = lease.connection.sock is not None
        try:
            lease.connect(config.connect_timeout_ms / 1000, read_timeout_s)
        except ConnectTimeoutError as exc:  # NewConnectionError (refused, DNS) is a subclass
            error = _unavailable() if isinstance(exc, NewConnectionError) else _timeout()
            raise lease.failed(circuits, base_url, error, reached=False) from None
        except (ssl.SSLError, urllib3.exceptions.HTTPError, OSError):  # TLS handshake or certificate
            raise lease.failed(circuits, base_url, _unavailable(), reached=False) from None
        try:
            send_request(lease.socket, head, body, chunked=chunked, block_bytes=CHUNK_BYTES)
            answer = read_answer(lease.socket, method)
        except GatewayError:
            lease.release(reusable=False)
            circuits.record_success(base_url)  # it took the connection: the body was the problem
            raise
        except NoAnswer:
            # A kept-alive connection the upstream closed as we sent: nothing was processed.
            if reused and not attempt and body is None and method in IDEMPOTENT_METHODS:
                lease.release(reusable=False)
                continue
            raise lease.failed(circuits, base_url, _unavailable(), reached=True) from None
        except TimeoutError:
            raise lease.failed(circuits, base_url, _timeout(), reached=True) from None
        except (InvalidAnswer, OSError) as exc:
            logger.warning("upstream request failed: %s", type(exc).__name__, extra=_log_extra(ctx))
            raise lease.failed(circuits, base_url, _unavailable(), reached=True) from None
        circuits.record_success(base_url)
        return build_response(answer, lease, method)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


class Lease:
    """A connection borrowed from the session's pool for ``origin``; ``release`` gives it back once."""

    __slots__ = ("connection", "pool", "released")

    def __init__(self, origin: str) -> None:
        for attempt in range(2):
            pool = upstream_pool(origin)
            try:
                # A kept-alive connection the upstream has closed comes back unconnected.
                self.connection: HTTPConnection = pool._get_conn()
                break
            except ClosedPoolError:
                _pools.pop(origin, None)  # evicted by the pool manager: take a fresh pool
                if attempt:
                    raise
        self.pool = pool
        self.released = False

    @property
    def socket(self) -> socket.socket:
        sock = self.connection.sock
        assert sock is not None  # noqa: S101 - connect() ran first
        return sock

    def connect(self, connect_timeout_s: float, read_timeout_s: float) -> None:
        """Connect (with TLS for https) unless the connection is already open; then set the read timeout."""
        connection = self.connection
        if connection.sock is None:
            connection.timeout = connect_timeout_s
            connection.connect()
        self.socket.settimeout(read_timeout_s)

    def failed(self, circuits: CircuitBreaker, base_url: str, error: GatewayError, *, reached: bool) -> UpstreamFailure:
        """Close the connection, count a failure for ``base_url`` and return the failure to raise."""
        self.release(reusable=False)
        circuits.record_failure(base_url)
        return UpstreamFailure(error, reached=reached)

    def release(self, *, reusable: bool) -> None:
        if self.released:
            return
        self.released = True
        if not reusable:
            self.connection.close()  # a half-used connection cannot carry another request
        self.pool._put_conn(self.connection)


def _timeout() -> GatewayError:
    return GatewayError(504, ErrorCode.UPSTREAM_TIMEOUT, "The upstream did not answer in time.")


def _unavailable() -> GatewayError:
    return GatewayError(502, ErrorCode.UPSTREAM_UNAVAILABLE, "The upstream could not be reached.")


# --- Responses ------------------------------------------------------------------------------


class RawSetCookie:
    """One upstream ``Set-Cookie`` value, kept byte for byte.

    Stored in ``response.cookies`` so both our WSGI fast path and Django's handler
    emit it as its own header (they call ``output(header="")`` on each value).
    """

    __slots__ = ("coded_value", "key", "value")

    def __init__(self, value: str) -> None:
        self.value = value
        pair = value.split(";", 1)[0]
        self.key, _, self.coded_value = (part.strip() for part in pair.partition("="))

    def output(self, attrs: object = None, header: str = "Set-Cookie:") -> str:
        return f"{header} {self.value}" if header else self.value

    def OutputString(self, attrs: object = None) -> str:  # http.cookies.Morsel's name
        return self.value


def build_response(answer: Answer, lease: Lease, method: str) -> HttpResponse:
    """Turn the upstream answer into a Django response; the body streams unless it came with the head."""
    headers = filter_hop_by_hop(answer.headers, RESPONSE_DROP_CHUNKED if answer.chunked else RESPONSE_DROP)
    try:
        content = b"" if method == "HEAD" or answer.status in (204, 304) else answer.body_in_buffer
        if content is not None:
            lease.release(reusable=answer.reusable)
            response: HttpResponse = HttpResponse(content, status=answer.status, reason=answer.reason or None)
        else:
            response = StreamingHttpResponse(  # type: ignore[assignment]  # same interface for our callers
                UpstreamBody(answer, lease), status=answer.status, reason=answer.reason or None
            )
    except ValueError:  # a status Django refuses (outside 100-599)
        lease.release(reusable=False)
        raise GatewayError(502, ErrorCode.UPSTREAM_UNAVAILABLE, "The upstream sent an invalid answer.") from None
    # Straight into Django's header store, skipping its per-header charset and line-break
    # checks: routing.http1 already refused any answer head with a bare CR or LF, and
    # the values are Latin-1 strings by construction. Django's default Content-Type goes:
    # only the upstream's counts.
    store: dict[str, tuple[str, str]] = response.headers._store  # type: ignore[attr-defined]  # Django 5.2
    store.clear()
    cookie_index = 0
    for name, value in headers:
        lowered = name.lower()
        if lowered == "set-cookie":
            dict.__setitem__(response.cookies, f"{cookie_index}", RawSetCookie(value))
            cookie_index += 1
        elif lowered in store:
            store[lowered] = (store[lowered][0], f"{store[lowered][1]}, {value}")
        else:
            store[lowered] = (name, value)
    return response


class UpstreamBody:
    """The upstream body as it arrives (still encoded); gives the connection back when done or closed.

    A class rather than a generator: a generator never started would not run its
    ``finally`` on close (a client gone before the first block), and the connection
    would never return to its pool.
    """

    __slots__ = ("answer", "blocks", "lease")

    def __init__(self, answer: Answer, lease: Lease) -> None:
        self.answer = answer
        self.lease = lease
        self.blocks = answer.body(CHUNK_BYTES)

    def __iter__(self) -> UpstreamBody:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self.blocks)
        except StopIteration:
            self.lease.release(reusable=self.answer.reusable)
            raise
        except Exception as exc:
            # Re-raised so the server drops the client connection: a truncated body must not look complete.
            logger.warning("upstream body interrupted: %s", type(exc).__name__)
            self.lease.release(reusable=False)
            raise

    def close(self) -> None:
        self.lease.release(reusable=False)  # no-op after a complete body; else the rest is unread


def _log_extra(ctx: RequestContext) -> dict[str, str]:
    return {"request_id": ctx.request_id}
