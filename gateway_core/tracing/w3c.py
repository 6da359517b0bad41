"""W3C Trace Context: parse and format the ``traceparent`` and ``tracestate`` headers.

A ``traceparent`` is ``<version>-<trace id>-<parent id>-<flags>`` in lower-case hex
(``00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01``). A client's header carries
no authority: a valid one is continued, anything else starts a new trace. Versions
above ``00`` are read as ``00`` (their first four fields), as the recommendation says;
``ff`` is invalid. A ``tracestate`` is kept only beside a valid ``traceparent``, and
dropped when it is not a valid list of at most 32 ``key=value`` members.
"""

from __future__ import annotations

import re

from opentelemetry.trace import SpanContext, TraceFlags, TraceState

_HEX = frozenset("0123456789abcdef")
_TRACESTATE_MEMBER = re.compile(
    r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]\Z"
)
TRACESTATE_MAX_MEMBERS = 32
TRACESTATE_MAX_CHARS = 512


def parse_traceparent(value: str | None, state: str | None = None) -> SpanContext | None:
    """Return the remote parent named by a ``traceparent`` value, or None when it is absent or invalid."""
    if not value or len(value) < 55:
        return None
    value = value.strip()
    version = value[:2]
    if (
        len(value) < 55
        or value[2] != "-"
        or value[35] != "-"
        or value[52] != "-"
        or not _HEX.issuperset(version)
        or version == "ff"
        or (version == "00" and len(value) != 55)
        or (len(value) > 55 and value[55] != "-")
    ):
        return None
    trace_hex, span_hex, flags_hex = value[3:35], value[36:52], value[53:55]
    if not (_HEX.issuperset(trace_hex) and _HEX.issuperset(span_hex) and _HEX.issuperset(flags_hex)):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(int(flags_hex, 16) & TraceFlags.SAMPLED),
        trace_state=parse_tracestate(state),
    )


def parse_tracestate(value: str | None) -> TraceState | None:
    """Return the members of a ``tracestate`` value, or None when it is absent or invalid."""
    if not value or len(value) > TRACESTATE_MAX_CHARS:
        return None
    members: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in value.split(","):
        member = raw.strip(" \t")
        if not member:
            continue  # empty list members are allowed and ignored
        if not _TRACESTATE_MEMBER.match(member):
            return None
        key, _, member_value = member.partition("=")
        if key in seen:
            return None
        seen.add(key)
        members.append((key, member_value))
    if not members or len(members) > TRACESTATE_MAX_MEMBERS:
        return None
    return TraceState(members)


def format_traceparent(context: SpanContext) -> str:
    """Return the ``traceparent`` value naming ``context`` as the parent."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags & TraceFlags.SAMPLED:02x}"


def format_tracestate(state: TraceState | None) -> str:
    """Return the ``tracestate`` value of ``state`` (empty when there is none)."""
    return state.to_header() if state else ""
