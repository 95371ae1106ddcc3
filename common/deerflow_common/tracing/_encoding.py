"""Spans as OTLP protobuf bytes, written by hand: each helper returns a complete field (tag +
length + body), so a span is one ``bytes`` join of fields and an export request one join of
spans. Field numbers are those of opentelemetry/proto/trace/v1/trace.proto and common.proto.

The daemons encode one span per task attempt; this is the measured fast path (2-4 us a span,
where the SDK's ``encode_spans`` costs about 55 us): change what it writes, never how fast.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence

# Every name without a leading underscore is exported by the package (see its __init__).

KIND_INTERNAL = 1
KIND_SERVER = 2
KIND_CLIENT = 3
KIND_PRODUCER = 4
KIND_CONSUMER = 5
STATUS_OK = 1
STATUS_ERROR = 2

_SPAN_ATTR = 0x4A  # Span.attributes = 9
_EVENT_ATTR = 0x1A  # Span.Event.attributes = 3
_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack


def _varint_slow(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [_varint_slow(n) for n in range(1 << 12)]


def varint(n: int) -> bytes:
    """A protobuf varint (non-negative ``n``)."""
    return _VARINTS[n] if n < 4096 else _varint_slow(n)


_varint = varint


def _field(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(body)) + body


_KEYS: dict[str, bytes] = {}


def _key(key: str) -> bytes:
    k = _KEYS.get(key)
    if k is None:
        k = _KEYS[key] = _field(0x0A, key.encode())
    return k


def _kv(key: str, any_value: bytes, tag: int) -> bytes:
    body = _key(key) + b"\x12" + _varint(len(any_value)) + any_value
    return bytes((tag,)) + _varint(len(body)) + body


def attr_str(key: str, value: str, tag: int = _SPAN_ATTR) -> bytes:
    v = value.encode()
    return _kv(key, b"\x0a" + _varint(len(v)) + v, tag)


def str_attr_encoder(key: str, tag: int = _SPAN_ATTR) -> Callable[[str], bytes]:
    """A fast :func:`attr_str` for one key, for values that change with every span."""
    kf = _key(key)
    k_len = len(kf)
    tag_b = bytes((tag,))
    varints = _VARINTS

    def encode(value: str) -> bytes:
        v = value.encode()
        n = len(v)
        if n + k_len < 120:  # every length fits in one byte
            return b"".join(
                (tag_b, varints[k_len + n + 4], kf, b"\x12", varints[n + 2], b"\x0a", varints[n], v)
            )
        return attr_str(key, value, tag)

    return encode


def attr_int(key: str, value: int, tag: int = _SPAN_ATTR) -> bytes:
    return _kv(key, b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF), tag)


def attr_float(key: str, value: float, tag: int = _SPAN_ATTR) -> bytes:
    return _kv(key, b"\x21" + _pack_d(value), tag)


def attr_bool(key: str, value: bool, tag: int = _SPAN_ATTR) -> bytes:
    return _kv(key, b"\x10\x01" if value else b"\x10\x00", tag)


def attr_strs(key: str, values: Iterable[str], tag: int = _SPAN_ATTR) -> bytes:
    items = b"".join(_field(0x0A, _field(0x0A, v.encode())) for v in values)
    return _kv(key, _field(0x2A, items), tag)


def event(name: str, time_ns: int, *attrs: bytes) -> bytes:
    """A span event; ``attrs`` are built with ``tag=EVENT_ATTR``."""
    return _field(0x5A, b"\x09" + _pack_q(time_ns) + _field(0x12, name.encode()) + b"".join(attrs))


EVENT_ATTR = _EVENT_ATTR


def status(code: int, message: str = "") -> bytes:
    body = (_field(0x12, message.encode()) if message else b"") + b"\x18" + _varint(code)
    return _field(0x7A, body)


def span_head(name: str, kind: int) -> bytes:
    """The name and kind fields, encoded once per kind of span."""
    return _field(0x2A, name.encode()) + b"\x30" + _varint(kind)


def encode_span(
    trace_id: bytes,
    span_id: bytes,
    parent_id: bytes | None,
    head: bytes,
    start_ns: int,
    end_ns: int,
    fields: bytes,
) -> bytes:
    """One span, ready to join into ``ScopeSpans.spans``. ``fields`` are attributes, events and
    status, already encoded."""
    body = b"".join(
        (
            b"\x0a\x10",
            trace_id,
            b"\x12\x08",
            span_id,
            b"\x22\x08" + parent_id if parent_id else b"",
            head,
            b"\x39",
            _pack_q(start_ns),
            b"\x41",
            _pack_q(end_ns),
            fields,
        )
    )
    return b"\x12" + _varint(len(body)) + body


def _any_value(value: object) -> bytes:
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    return _field(0x0A, str(value).encode())


def resource_field(attributes: Mapping[str, object]) -> bytes:
    """``ResourceSpans.resource`` (field 1) for the given resource attributes."""
    body = b"".join(_kv(k, _any_value(v), 0x0A) for k, v in attributes.items())
    return _field(0x0A, body)


def scope_field(name: str, version: str) -> bytes:
    """``ScopeSpans.scope`` (field 1)."""
    return _field(0x0A, _field(0x0A, name.encode()) + _field(0x12, version.encode()))


def export_request(resource: bytes, scope: bytes, spans: Sequence[bytes]) -> bytes:
    """A serialized ``ExportTraceServiceRequest`` of one resource and one scope: the lengths
    first, then one join (the spans, a megabyte per request, are copied once)."""
    scope_spans_len = len(scope) + sum(map(len, spans))
    scope_head = b"\x12" + _varint(scope_spans_len)
    resource_spans_len = len(resource) + len(scope_head) + scope_spans_len
    head = b"\x0a" + _varint(resource_spans_len) + resource + scope_head + scope
    return b"".join([head, *spans])
