"""Running a handler's own splitter and checking what it returned.

The splitter is plugin code: it may raise, return the wrong type, or describe parts that cannot
be scheduled (a dependency on a later part, overlapping item ranges). Each such case becomes a
SPLIT_ERROR naming the handler, the stage and the fix, so the task fails at once with a sentence
instead of stalling the job or raising into the scheduling core.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from deerflow_common.errors import TaskError
from deerflow_controller.core.model import SplitPolicy
from deerflow_controller.core.validation import quote
from deerflow_controller.decomposer._model import (
    Analysis,
    DecomposerConfig,
    Part,
    Plan,
    SplitRequest,
    Splitter,
    Strategy,
    split_error,
)
from deerflow_controller.decomposer._plan import analyse, part_timeout, ratio_text

__all__ = ["plan_custom"]

_FIX = "fix the handler's splitter or set split=NEVER"


class _BadPart(Exception):
    """A part the splitter returned cannot be scheduled; the message says why."""


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadPart(f"{what} is {type(value).__name__} {value!r}, not an int")
    return value


def _items(raw: object, i: int) -> range | None:
    if raw is None:
        return None
    if isinstance(raw, range):
        start, stop, step = raw.start, raw.stop, raw.step
    elif isinstance(raw, tuple) and len(raw) == 2:
        start = _as_int(raw[0], f"part {i} items start")
        stop = _as_int(raw[1], f"part {i} items stop")
        step = 1
    else:
        raise _BadPart(f"part {i} items is {type(raw).__name__}, not a range or (start, stop)")
    if step != 1 or not 0 <= start <= stop:
        raise _BadPart(f"part {i} items {start}..{stop} (step {step}) is not a range of indices")
    return range(start, stop)


def _part(raw: object, i: int) -> tuple[bytes, tuple[int, ...], range | None, float]:
    """(payload, depends_on, items, est_duration_s) of one returned part."""
    if isinstance(raw, bytes | bytearray):
        return bytes(raw), (), None, 0.0
    if not hasattr(raw, "payload"):
        what = type(raw).__name__
        raise _BadPart(f"part {i} is a {what}, not bytes or an object with a bytes payload")
    payload = raw.payload
    if not isinstance(payload, bytes | bytearray):
        raise _BadPart(f"part {i} payload is {type(payload).__name__}, not bytes")
    deps_raw = getattr(raw, "depends_on", None)
    deps_raw = () if deps_raw is None else deps_raw
    if isinstance(deps_raw, str | bytes) or not isinstance(deps_raw, Sequence):
        raise _BadPart(f"part {i} depends_on is {type(deps_raw).__name__}, not a list of ints")
    deps = tuple(_as_int(d, f"part {i} depends_on entry") for d in deps_raw)
    for d in deps:
        if not 0 <= d < i:
            raise _BadPart(f"part {i} depends on part {d}, which is not an earlier part")
    est = getattr(raw, "est_duration_s", 0.0)
    if isinstance(est, bool) or not isinstance(est, int | float) or not 0 <= est < math.inf:
        raise _BadPart(f"part {i} est_duration_s is {est!r}, not a number of seconds >= 0")
    return bytes(payload), tuple(sorted(set(deps))), _items(getattr(raw, "items", None), i), est


def _check_ranges(ranges: list[range | None]) -> None:
    """Independent parts merged by default must cover items 0..n-1 once each, in part order,
    so that part order is item order."""
    at = 0
    for i, r in enumerate(ranges):
        if r is None:
            raise _BadPart(
                f"part {i} has no items range; independent parts merged by default must say "
                "which items they carry (items=range(start, stop)), or install a merger"
            )
        if r.start != at:
            raise _BadPart(
                f"part {i} carries items {r.start}..{r.stop - 1} but the next item is {at}; "
                "parts must cover the items in order, once each"
            )
        at = r.stop


def _p90(est: float, units: int, analysis: Analysis) -> float:
    """A part's p90 run time: the splitter's estimate stretched by the handler's measured tail
    (p90 / typical), else the predictor's p90 per item times the part's units of work."""
    if est <= 0:
        return units * analysis.item_p90_s
    if analysis.item_s > 0:
        return est * analysis.item_p90_s / analysis.item_s
    return est


def plan_custom(
    request: SplitRequest, splitter: Splitter, config: DecomposerConfig, *, has_merger: bool
) -> Plan | TaskError:
    """Plan from the handler's own splitter. Never raises (see the module docstring)."""
    name = request.handler
    if request.policy is SplitPolicy.NEVER:
        return Plan(name, Strategy.NONE, (), 0, "not split: the submitter set split=NEVER")
    try:
        raw = splitter(request.payload)
    except Exception as exc:
        return split_error(name, "splitter", f"raised {type(exc).__name__}: {exc}", _FIX)
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        problem = f"returned {type(raw).__name__}, not a list of parts"
        return split_error(name, "splitter", problem, _FIX)
    if not raw:
        return split_error(name, "splitter", "returned no parts", _FIX)
    if len(raw) > config.max_parts:
        problem = f"returned {len(raw)} parts, more than the cap of {config.max_parts}"
        return split_error(name, "splitter", problem, "return fewer, larger parts")
    try:
        checked = [_part(p, i) for i, p in enumerate(raw)]
        pipeline = any(deps for _, deps, _, _ in checked)
        if len(checked) > 1 and not pipeline and not has_merger:
            _check_ranges([r for _, _, r, _ in checked])
    except _BadPart as exc:
        return split_error(name, "splitter", str(exc), _FIX)
    except Exception as exc:  # a plugin's part type whose attribute raised
        problem = f"its parts could not be read ({type(exc).__name__}: {exc})"
        return split_error(name, "splitter", problem, _FIX)
    if len(checked) == 1:
        return Plan(
            name,
            Strategy.NONE,
            (),
            0,
            f"not split: handler {quote(name)}'s splitter returned one part",
            request.items_field,
            True,
        )
    count = max((r.stop for _, _, r, _ in checked if r is not None), default=0)
    analysis = analyse(request, count or len(checked), config)
    parts: list[Part] = []
    for i, (payload, deps, items, est) in enumerate(checked):
        units = math.ceil(len(items) / analysis.concurrency) if items is not None else 1
        typical = est if est > 0 else units * analysis.item_s
        timeout = part_timeout(_p90(est, units, analysis), 1, request.parent_timeout_s, config)
        parts.append(Part(i, payload, items or range(0), deps, timeout, typical))
    if pipeline:
        strategy, shape = Strategy.PIPELINE, "pipeline stages"
    elif analysis.io_bound:
        strategy, shape = Strategy.ASYNC_BATCHES, "async batches"
    else:
        strategy, shape = Strategy.PARALLEL_CHUNKS, "chunks"
    what = f"{count} {request.items_field or 'items'} into " if count else ""
    reason = (
        f"split {what}{len(parts)} {shape} by handler {quote(name)}'s splitter: "
        f"{ratio_text(analysis, request.kind)}"
    )
    return Plan(name, strategy, tuple(parts), count, reason, request.items_field, True, analysis)
