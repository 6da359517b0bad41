"""OTLP/HTTP export of finished spans: the official exporter with a faster protobuf encoder.

The official ``OTLPSpanExporter`` sends, retries and backs off; only its encoding is
replaced. Its encoder builds a protobuf object per span, attribute and value, 50-120 µs
a span on the reference machine, paid by the same gunicorn worker that serves requests
(docs/PERFORMANCE.md, "Tracing"). This one writes the same ``ExportTraceServiceRequest``
bytes directly (about a tenth of that), resource and scope once per batch, from the
gateway's own span records (``gateway_core.tracing.Span``) or from SDK ``ReadableSpan``
objects. A ``ReadableSpan`` with events or links (the gateway makes none) is encoded by
the official encoder. The unit tests parse both encodings with ``opentelemetry-proto``
and compare them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_FIXED32 = struct.Struct("<I")
# Span.flags: "has is_remote" always, "is remote" when the parent came from another process.
_FLAG_HAS_IS_REMOTE = 0x100
_FLAG_IS_REMOTE = 0x200
# Span.kind, field 6: the SDK's INTERNAL is 0, OTLP's SPAN_KIND_INTERNAL is 1.
_KIND_FIELDS = {kind: b"\x30" + bytes((kind.value + 1,)) for kind in SpanKind}
_LOW_64 = (1 << 64) - 1


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 as two's complement, ten bytes
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_TAGS = tuple(_varint(number << 3 | 2) for number in range(16))


def _field(number: int, payload: bytes) -> bytes:
    """Return a length-delimited field (strings, bytes, sub-messages)."""
    size = len(payload)
    return _TAGS[number] + (bytes((size,)) if size < 0x80 else _varint(size)) + payload


def _any_value(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _field(1, value.encode("utf-8", "surrogatepass"))
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(6, b"".join(_field(1, _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"cannot encode an attribute of type {type(value).__name__}")


def _key_value(key: str, value: object) -> bytes:
    return _field(1, key.encode()) + _field(2, _any_value(value))


# Encoded attributes (whole KeyValue fields), one cache per field number, by (key, type,
# value): most values repeat (methods, routes, services, status codes), so most attributes
# cost one lookup. Keys whose values are new each time are encoded and never kept. A
# cache is cleared when full.
_ATTRIBUTE_CACHES: dict[int, dict[tuple[str, type, object], bytes]] = {1: {}, 3: {}, 9: {}}
_ATTRIBUTE_CACHE_MAX = 4096
_UNIQUE_KEYS = frozenset({"gateway.request.id", "messaging.message.id"})
_CACHEABLE = (str, int, bool, float)


def _attributes(number: int, attributes: Mapping[str, object] | None) -> bytes:
    if not attributes:
        return b""
    cache = _ATTRIBUTE_CACHES[number]
    get = cache.get
    try:
        return b"".join(
            [
                get((key, value.__class__, value)) or _new_attribute(cache, number, key, value)
                for key, value in attributes.items()
            ]
        )
    except TypeError:  # an unhashable value (a list): encoded without the cache
        return b"".join([_field(number, _key_value(key, value)) for key, value in attributes.items()])


def _new_attribute(cache: dict[tuple[str, type, object], bytes], number: int, key: str, value: object) -> bytes:
    if value.__class__ is str:  # most new values (a request id, a path): short strings, one-byte lengths
        key_bytes, value_bytes = key.encode(), value.encode("utf-8", "surrogatepass")  # type: ignore[attr-defined]
        if len(key_bytes) + len(value_bytes) < 0x78:
            size = len(value_bytes)
            kv = b"\x0a%c%b\x12%c\x0a%c%b" % (len(key_bytes), key_bytes, size + 2, size, value_bytes)
            encoded = _TAGS[number] + bytes((len(kv),)) + kv
            if key not in _UNIQUE_KEYS:
                if len(cache) >= _ATTRIBUTE_CACHE_MAX:
                    cache.clear()
                cache[(key, str, value)] = encoded
            return encoded
    encoded = _field(number, _key_value(key, value))
    if value.__class__ in _CACHEABLE and key not in _UNIQUE_KEYS:
        if len(cache) >= _ATTRIBUTE_CACHE_MAX:
            cache.clear()
        cache[(key, value.__class__, value)] = encoded
    return encoded


def encode_span(span: ReadableSpan) -> bytes:
    """Return one span as the bytes of an OTLP ``Span`` message."""
    if span.events or span.links:
        return _encode_span(span).SerializeToString()
    context = span.context
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_field(3, ",".join(f"{k}={v}" for k, v in context.trace_state.items()).encode()))
    parent = span.parent
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_field(5, span.name.encode("utf-8", "surrogatepass")))
    parts += (
        _KIND_FIELDS[span.kind],
        b"\x39",
        _FIXED64.pack(span.start_time or 0),
        b"\x41",
        _FIXED64.pack(span.end_time or 0),
        _attributes(9, span.attributes),
    )
    if span.dropped_attributes:
        parts += (b"\x50", _varint(span.dropped_attributes))
    status = span.status
    status_body = b""
    if status.description:
        status_body += _field(2, status.description.encode())
    if status.status_code is not StatusCode.UNSET:
        status_body += b"\x18" + _varint(status.status_code.value)
    parts.append(_field(15, status_body))
    flags = _FLAG_HAS_IS_REMOTE | (_FLAG_IS_REMOTE if parent is not None and parent.is_remote else 0)
    parts += (b"\x85\x01", _FIXED32.pack(flags))
    return b"".join(parts)


# The fixed parts of a gateway span record: ids (big-endian), kind and times (little-endian fixed64).
_IDS = struct.Struct(">2sQQ2sQ")
_IDS_PARENT = struct.Struct(">2sQQ2sQ2sQ")
_KIND_TIMES = struct.Struct("<BBBQBQ")
_KIND_VALUES = {id(kind): kind.value + 1 for kind in SpanKind}  # by id(): an Enum's hash is Python code
_STATUS_FIELDS: dict[StatusCode, bytes] = {
    code: _field(15, b"\x18" + _varint(code.value) if code is not StatusCode.UNSET else b"") for code in StatusCode
}
_STATUS_UNSET = _STATUS_FIELDS[StatusCode.UNSET]
_FLAGS_LOCAL = b"\x85\x01" + _FIXED32.pack(_FLAG_HAS_IS_REMOTE)
_FLAGS_REMOTE = b"\x85\x01" + _FIXED32.pack(_FLAG_HAS_IS_REMOTE | _FLAG_IS_REMOTE)
_NAMES: dict[str, bytes] = {}  # encoded span names (field 5): "GET /api/v1/orders" repeats


def encode_record(span: object) -> bytes:
    """Return a gateway span record (``gateway_core.tracing.Span``, ended) as the bytes of an OTLP ``Span``."""
    trace_id = span.trace_int  # type: ignore[attr-defined]  # the record's plain fields, read as they are
    parent = span.parent  # type: ignore[attr-defined]
    state = span.trace_state  # type: ignore[attr-defined]
    if parent is None:
        flags = _FLAGS_LOCAL
        head = _IDS.pack(b"\x0a\x10", trace_id >> 64, trace_id & _LOW_64, b"\x12\x08", span.span_id)  # type: ignore[attr-defined]
    elif state:
        flags = _FLAGS_REMOTE if isinstance(parent, SpanContext) and parent.is_remote else _FLAGS_LOCAL
        head = (
            _IDS.pack(b"\x0a\x10", trace_id >> 64, trace_id & _LOW_64, b"\x12\x08", span.span_id)  # type: ignore[attr-defined]
            + _field(3, ",".join(f"{k}={v}" for k, v in state.items()).encode())
            + b"\x22\x08"
            + parent.span_id.to_bytes(8, "big")
        )
    else:
        flags = _FLAGS_REMOTE if isinstance(parent, SpanContext) and parent.is_remote else _FLAGS_LOCAL
        head = _IDS_PARENT.pack(
            b"\x0a\x10",
            trace_id >> 64,
            trace_id & _LOW_64,
            b"\x12\x08",
            span.span_id,  # type: ignore[attr-defined]
            b"\x22\x08",
            parent.span_id,
        )
    name = span.name  # type: ignore[attr-defined]
    name_field = _NAMES.get(name)
    if name_field is None:
        if len(_NAMES) >= _ATTRIBUTE_CACHE_MAX:
            _NAMES.clear()
        name_field = _NAMES[name] = _field(5, name.encode("utf-8", "surrogatepass")) if name else b""
    status = span.status  # type: ignore[attr-defined]
    if status is None:
        status_field = _STATUS_UNSET
    elif status.description:
        status_field = _field(15, _field(2, status.description.encode()) + b"\x18" + _varint(status.status_code.value))
    else:
        status_field = _STATUS_FIELDS[status.status_code]
    body = b"".join(
        (
            head,
            name_field,
            _KIND_TIMES.pack(0x30, _KIND_VALUES[id(span.kind)], 0x39, span.start_ns, 0x41, span.end_ns),  # type: ignore[attr-defined]
            _attributes(9, span.attributes),  # type: ignore[attr-defined]
            status_field,
            flags,
        )
    )
    size = len(body)  # as ScopeSpans.spans, field 2
    if size < 0x80:
        return b"\x12" + bytes((size,)) + body
    if size < 0x4000:
        return b"\x12" + bytes((size & 0x7F | 0x80, size >> 7)) + body
    return b"\x12" + _varint(size) + body


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    body = _field(1, scope.name.encode()) if scope.name else b""
    if scope.version:
        body += _field(2, scope.version.encode())
    return body + _attributes(3, scope.attributes)


class ExportRequestEncoder:
    """Encode batches of spans as ``ExportTraceServiceRequest`` bytes; resources are encoded once.

    ``resource`` and ``scope`` are those of the gateway's span records (which carry
    neither); SDK ``ReadableSpan`` objects name their own.
    """

    def __init__(self, resource: Resource | None = None, scope: InstrumentationScope | None = None) -> None:
        self._resources: dict[int, tuple[Resource, bytes]] = {}  # by id(), the object kept to check identity
        self._resource = resource if resource is not None else Resource.get_empty()
        self._scope = scope

    def encode(self, spans: Sequence[object]) -> bytes:
        """Return the request body for ``spans``, grouped by resource and scope as the official encoder does."""
        # Grouped by identity: hashing a Resource or a scope serialises its attributes to JSON.
        if not any(isinstance(span, ReadableSpan) for span in spans):  # the gateway's records only
            return self._resource_spans(
                self._resource, {id(self._scope): (self._scope, list(map(encode_record, spans)))}
            )
        resources: dict[int, Resource] = {}
        grouped: dict[int, dict[int, tuple[InstrumentationScope | None, list[bytes]]]] = {}
        own_resource, own_scope = self._resource, self._scope
        for span in spans:
            if isinstance(span, ReadableSpan):
                resource, scope, encoded = span.resource, span.instrumentation_scope or None, None
            else:  # a gateway span record
                resource, scope, encoded = own_resource, own_scope, encode_record(span)
            scopes = grouped.get(id(resource))
            if scopes is None:
                resources[id(resource)] = resource
                scopes = grouped[id(resource)] = {}
            entry = scopes.get(id(scope))
            if entry is None:
                entry = scopes[id(scope)] = (scope, [])
            entry[1].append(encoded if encoded is not None else _field(2, encode_span(span)))  # type: ignore[arg-type]
        return b"".join(self._resource_spans(resources[key], scopes) for key, scopes in grouped.items())

    def _resource_spans(
        self, resource: Resource, scopes: dict[int, tuple[InstrumentationScope | None, list[bytes]]]
    ) -> bytes:
        """Return one ``ResourceSpans`` field: the resource (encoded once) and its scopes' encoded spans."""
        cached = self._resources.get(id(resource))
        if cached is None or cached[0] is not resource:
            cached = self._resources[id(resource)] = (resource, _field(1, _attributes(1, resource.attributes)))
        scope_spans = b""
        for scope, items in scopes.values():
            scope_body = _field(1, _scope(scope)) + b"".join(items)
            if scope is not None and scope.schema_url:
                scope_body += _field(3, scope.schema_url.encode())
            scope_spans += _field(2, scope_body)
        schema = _field(3, resource.schema_url.encode()) if resource.schema_url else b""
        return _field(1, cached[1] + scope_spans + schema)


class SpanExporter(OTLPSpanExporter):
    """The official OTLP/HTTP span exporter (endpoint, headers, timeout, retries from ``OTEL_*``), faster encoding."""

    def __init__(
        self, *, resource: Resource | None = None, scope: InstrumentationScope | None = None, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # the official exporter's keyword options
        self._encoder = ExportRequestEncoder(resource, scope)

    def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]  # records too
        """Send one batch; a failure (collector down, refused) is reported, never raised."""
        if self._shutdown:
            return SpanExportResult.FAILURE
        result = self._client.export(self._encoder.encode(spans))
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
