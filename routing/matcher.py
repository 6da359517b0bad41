"""Path safety and longest-prefix route matching (SPEC §4.2, §4.3).

The gateway matches on the percent-decoded path but forwards the raw path exactly as
the client sent it; ``raw_target`` recovers that from gunicorn's ``RAW_URI``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote

from gateway_core.context import RequestContext
from gateway_core.errors import ErrorCode, GatewayError
from gateway_core.snapshot import CompiledRoute

_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


def raw_target(meta: Mapping[str, object]) -> tuple[str, str | None]:
    """Return ``(raw path, raw query or None)`` of the request line, byte for byte.

    ``None`` means the request had no ``?``; ``""`` an empty query. Without gunicorn's
    ``RAW_URI`` (another WSGI server) the path is re-encoded from ``PATH_INFO``.
    Non-ASCII bytes (invalid on a request line, yet sometimes sent) are
    percent-encoded, the only change ever made.
    """
    uri = meta.get("RAW_URI")
    if not isinstance(uri, str) or not uri:
        from urllib.parse import quote

        path_info = str(meta.get("PATH_INFO", "/"))
        query = str(meta.get("QUERY_STRING", ""))
        path = quote(path_info.encode("latin-1").decode("utf-8", "replace"), safe="/;=,:@!$&'()*+~-._")
        return path, (query or None)
    if not uri.startswith("/"):
        # absolute-form (GET http://host/path HTTP/1.1) or asterisk-form
        scheme_end = uri.find("://")
        slash = uri.find("/", scheme_end + 3) if scheme_end != -1 else -1
        uri = uri[slash:] if slash != -1 else "/"
    if _NON_ASCII.search(uri):
        uri = _NON_ASCII.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode("latin-1")), uri)
    path, mark, query = uri.partition("?")
    return path, (query if mark else None)


def decode_path(raw_path: str) -> str:
    """Percent-decode ``raw_path`` once (UTF-8; invalid sequences become U+FFFD)."""
    return unquote(raw_path, encoding="utf-8", errors="replace") if "%" in raw_path else raw_path


def is_unsafe(path: str) -> bool:
    """Return True for a decoded path with a ``.``/``..`` segment, a NUL or a backslash."""
    if "\x00" in path or "\\" in path:
        return True
    if "/." not in path:
        return False
    return any(segment in (".", "..") for segment in path.split("/"))


def reject_unsafe_path(ctx: RequestContext) -> None:
    """Fill ``ctx.raw_path``/``ctx.path``; raise 400 ``bad_path`` for an unsafe decoded path."""
    raw_path, _ = raw_target(ctx.request.META)
    ctx.raw_path = raw_path
    path = decode_path(raw_path)
    if is_unsafe(path):
        raise GatewayError(400, ErrorCode.BAD_PATH, "The request path is not allowed.")
    ctx.path = path


def find_route(routes_by_prefix: Mapping[str, CompiledRoute], path: str) -> CompiledRoute | None:
    """Return the route with the longest prefix matching ``path`` on a segment boundary, or None.

    Walks the path's own prefixes from longest to shortest: a few dict lookups,
    whatever the number of routes.
    """
    candidate = path
    while candidate:
        route = routes_by_prefix.get(candidate)
        if route is not None:
            return route
        cut = candidate.rfind("/")
        if cut <= 0:
            return None
        candidate = candidate[:cut]
    return None


def raw_rest(raw_path: str, decoded_prefix_len: int) -> str:
    """Return the part of ``raw_path`` after the first ``decoded_prefix_len`` decoded characters.

    Route prefixes are ASCII, so every decoded character of the prefix came from one
    raw character or one ``%XX`` escape.
    """
    if "%" not in raw_path:
        return raw_path[decoded_prefix_len:]
    index = consumed = 0
    while consumed < decoded_prefix_len and index < len(raw_path):
        index += 3 if _PERCENT.match(raw_path, index) else 1
        consumed += 1
    return raw_path[index:]


def resolve_route(ctx: RequestContext) -> None:
    """Set ``ctx.route`` and ``ctx.rest_path``; raise 404 ``route_not_found``."""
    route = find_route(ctx.snapshot.routes_by_prefix, ctx.path)
    if route is None:
        raise GatewayError(404, ErrorCode.ROUTE_NOT_FOUND, "No route matches this path.")
    ctx.route = route
    ctx.rest_path = raw_rest(ctx.raw_path, len(route.route_prefix))
