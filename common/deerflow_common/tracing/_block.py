"""Many spans of one shape encoded at once, with numpy: the daemons' common case.

Every task attempt makes one schedule span (controller) and one execute span (agent), and
nearly all of them differ only in their ids, times and task id: the name, kind and every other
attribute are the same for a whole assignment message. Encoding them one by one costs about
3 us of Python each (a ``bytes`` join of a dozen fields); here a block of spans is one 2-D
``uint8`` array whose rows are complete ``Span`` fields of ``ScopeSpans.spans``: a template
row holds the shared bytes, and the varying columns are filled for all rows at once. Rows are
grouped by the length of the task id (the only field whose size varies), so each group is one
array and its bytes are ready to join into an export request.

Protobuf lets a message's fields come in any order, so the row puts the shared fields first
and the fixed-size ones last::

    0x12 <len> | shared | task id attribute | trace_id | span_id | parent_span_id | start | end
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._encoding import attr_str, varint

__all__ = ["encode_span_block"]

_U8 = np.uint8
_TRACE_TAG = b"\x0a\x10"
_SPAN_ID = b"\x12\x08" + bytes(8)
_TAIL = _TRACE_TAG + bytes(16) + _SPAN_ID
"""trace_id (field 1) and span_id (field 2), bodies zeroed in the template."""
_PARENT_TAG = b"\x22\x08"
_PARENT = _PARENT_TAG + bytes(8)
_TIMES = b"\x39" + bytes(8) + b"\x41" + bytes(8)
"""start_time_unix_nano (field 7) and end_time_unix_nano (field 8), fixed64."""


def encode_span_block(
    *,
    trace_ids: bytes,
    span_ids: bytes,
    parent_ids: bytes,
    starts: Sequence[float],
    ends: Sequence[float] | float,
    values: Sequence[str],
    value_key: str,
    shared: bytes,
) -> list[tuple[bytes, int]]:
    """Encode ``len(values)`` spans; return (bytes, span count) blocks, each a run of complete
    ``ScopeSpans.spans`` fields.

    ``trace_ids``: 16 bytes per span, or 16 shared by all; ``span_ids``: 8 bytes per span;
    ``parent_ids``: 8 per span, 8 shared, or empty for root spans; ``starts``/``ends``: Unix
    seconds per span (``ends`` may be one number for all); ``values``: each span's string
    attribute ``value_key`` (the task id); ``shared``: every other field, encoded (name, kind,
    attributes, events, status)."""
    n = len(values)
    if n == 0:
        return []
    joined = "".join(values)
    if joined.isascii():
        text = np.frombuffer(joined.encode(), _U8)
        lens = np.fromiter(map(len, values), np.intp, n)
    else:
        encoded = [v.encode() for v in values]
        text = np.frombuffer(b"".join(encoded), _U8)
        lens = np.fromiter(map(len, encoded), np.intp, n)
    offsets = np.zeros(n, np.intp)
    np.cumsum(lens[:-1], out=offsets[1:])
    traces = np.frombuffer(trace_ids, _U8).reshape(-1, 16)
    ids = np.frombuffer(span_ids, _U8).reshape(n, 8)
    parents = np.frombuffer(parent_ids, _U8).reshape(-1, 8) if parent_ids else None
    t0 = _nanos(starts).reshape(-1, 8)
    t1 = _nanos(ends).reshape(-1, 8)
    per_span = {"traces": traces.shape[0] > 1, "parents": parents is not None and len(parents) > 1}
    if per_span["traces"] and traces.shape[0] != n:
        raise ValueError(f"trace_ids holds {traces.shape[0]} ids for {n} spans")
    if parents is not None and per_span["parents"] and parents.shape[0] != n:
        raise ValueError(f"parent_ids holds {parents.shape[0]} ids for {n} spans")

    blocks: list[tuple[bytes, int]] = []
    lengths = sorted(set(lens.tolist()))  # (np.unique imports numpy.ma on first use)
    for length in lengths:
        rows_of: slice | np.ndarray = (
            slice(None) if len(lengths) == 1 else np.flatnonzero(lens == length)
        )
        prefix = attr_str(value_key, "\0" * length)
        prefix = prefix[: len(prefix) - length]
        body_len = (
            len(shared)
            + len(prefix)
            + length
            + len(_TAIL)
            + (len(_PARENT) if parents is not None else 0)
            + len(_TIMES)
        )
        lead = b"\x12" + varint(body_len) + shared + prefix
        # What all spans share (a trace id, a parent) is written once, into the template.
        tail = _TAIL if per_span["traces"] else _TRACE_TAG + traces[0].tobytes() + _SPAN_ID
        if parents is not None:
            tail += _PARENT if per_span["parents"] else _PARENT_TAG + parents[0].tobytes()
        template = lead + bytes(length) + tail + _TIMES
        count = n if isinstance(rows_of, slice) else len(rows_of)
        rows = np.empty((count, len(template)), _U8)
        rows[:] = np.frombuffer(template, _U8)
        col = len(lead)
        if length:
            if isinstance(rows_of, slice):
                picks = offsets[:, None] + np.arange(length)
            else:
                picks = offsets[rows_of][:, None] + np.arange(length)
            rows[:, col : col + length] = text[picks]
        col += length + 2
        if per_span["traces"]:
            rows[:, col : col + 16] = traces[rows_of]
        col += 18
        rows[:, col : col + 8] = ids[rows_of]
        col += 8
        if parents is not None:
            col += 2
            if per_span["parents"]:
                rows[:, col : col + 8] = parents[rows_of]
            col += 8
        rows[:, col + 1 : col + 9] = t0[rows_of] if t0.shape[0] > 1 else t0
        rows[:, col + 10 : col + 18] = t1[rows_of] if t1.shape[0] > 1 else t1
        blocks.append((rows.tobytes(), count))
    return blocks


def _nanos(seconds: Sequence[float] | float) -> np.ndarray:
    """Unix seconds as little-endian fixed64 nanoseconds, as bytes rows (``int(s * 1e9)``, the
    same rounding as the one-by-one encoders)."""
    ns = (np.asarray(seconds, np.float64) * 1e9).astype("<u8")
    return np.atleast_1d(ns).view(_U8)
