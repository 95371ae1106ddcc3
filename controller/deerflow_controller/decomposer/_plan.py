"""The split decision for a task whose handler declares an item list.

Formulas (n items, s free slots, t typical and t90 p90 seconds per item, floor the per-part
overhead floor, c items in flight per io task, cap the max parts):

- **io-bound** when the measured io_fraction >= ``io_bound_fraction`` (unmeasured: the declared
  kind is io), and the handler is an io handler (only the event loop overlaps items in one task).
- **parallel chunks** (cpu-ish): a chunk must carry at least k = ceil(floor / t) items, so
  parts = min(s, cap, n // k); chunk sizes differ by at most one (the makespan is the largest).
- **async batches** (io-bound): a part runs its items in waves of c, one wave costing about t, and
  must run at least w = ceil(floor / t) waves, so parts = min(s, cap, ceil(n / (c * w))).
- a handler's ``max_items_per_part`` m forces parts >= ceil(n / m), whatever the slots and
  costs say; more than ``cap`` parts needed is a SPLIT_ERROR.
- fewer than two parts: **none**.
- a part's timeout = max(timeout floor, safety * t90 * units), units = items for a chunk, waves
  for a batch; capped by the parent's own timeout, never divided from it.
"""

from __future__ import annotations

import math
from typing import Any

from deerflow_common.errors import TaskError
from deerflow_controller.core.model import SplitPolicy
from deerflow_controller.core.validation import quote
from deerflow_controller.decomposer._model import (
    Analysis,
    DecomposerConfig,
    Part,
    Plan,
    SplitRequest,
    Strategy,
    split_error,
)
from deerflow_controller.decomposer._payload import parse_items, part_payload

__all__ = ["analyse", "balanced_ranges", "part_timeout", "plan_items", "ratio_text"]


def analyse(request: SplitRequest, items: int, config: DecomposerConfig) -> Analysis:
    """Predicted per-item cost, io versus cpu, and the whole task's predicted run time."""
    # A predictor that answers NaN or inf knows nothing: treat it as no estimate, never as an
    # infinite part timeout.
    t = request.item_s if 0 < request.item_s < math.inf else 0.0
    t90 = request.item_p90_s if 0 < request.item_p90_s < math.inf else t
    fraction = request.io_fraction
    if fraction is not None and math.isnan(fraction):
        fraction = None  # nothing measured yet
    ratio: float | None = None
    if fraction is not None:
        fraction = min(1.0, max(0.0, fraction))
        ratio = math.inf if fraction >= 1.0 else 1.0 / (1.0 - fraction)
        waits = fraction >= config.io_bound_fraction
    else:
        waits = request.kind == "io"
    io_bound = waits and request.kind == "io"
    concurrency = 1
    if io_bound:
        declared = request.item_concurrency
        concurrency = declared if declared > 0 else config.item_concurrency
    whole = math.ceil(items / concurrency) * t
    return Analysis(items, t, t90, io_bound, waits, ratio, concurrency, whole)


def balanced_ranges(n: int, parts: int) -> list[range]:
    """``n`` item indices in ``parts`` contiguous ranges whose sizes differ by at most one, the
    larger first (as numpy.array_split does)."""
    size, extra = divmod(n, parts)
    out: list[range] = []
    start = 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        out.append(range(start, stop))
        start = stop
    return out


def part_timeout(
    p90_s: float, units: float, parent_timeout_s: float, cfg: DecomposerConfig
) -> float:
    """Start-to-close for one part from its predicted p90 work (see the module docstring)."""
    timeout = max(cfg.timeout_floor_s, cfg.timeout_safety * p90_s * units)
    if parent_timeout_s > 0:
        timeout = min(timeout, parent_timeout_s)
    return timeout


def ratio_text(analysis: Analysis, kind: str) -> str:
    """'io-bound (wall/cpu 40x)', 'cpu-bound (wall/cpu 1.1x)', 'io-bound (declared io)'."""
    if analysis.io_bound:
        label = "io-bound"
    elif analysis.waits:
        label = "waiting but a cpu handler (no overlap inside one task)"
    else:
        label = "cpu-bound"
    ratio = analysis.wall_cpu_ratio
    if ratio is None:
        return f"{label} (declared {kind})"
    if math.isinf(ratio):
        shown = "inf"
    elif ratio >= 10:
        shown = f"{ratio:.0f}x"
    else:
        shown = f"{ratio:.1f}x"
    return f"{label} (wall/cpu {shown})"


def _sizes(ranges: list[range]) -> str:
    small, large = len(ranges[-1]), len(ranges[0])
    return str(large) if small == large else f"{small}-{large}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def plan_items(request: SplitRequest, config: DecomposerConfig) -> Plan | TaskError:
    """Split by the handler's declared items field, or decide not to. Never raises: a payload
    that cannot be split is a SPLIT_ERROR naming the handler and the stage."""
    name, field = request.handler, request.items_field

    def whole(reason: str, count: int = 0, analysis: Analysis | None = None) -> Plan:
        return Plan(name, Strategy.NONE, (), count, f"not split: {reason}", field, False, analysis)

    if request.policy is SplitPolicy.NEVER:
        return whole("the submitter set split=NEVER")
    if not field:
        return whole(f"handler {quote(name)} declares no items field")
    parsed = parse_items(name, request.payload, field)
    if isinstance(parsed, TaskError):
        return parsed
    doc, items = parsed
    n = len(items)
    if n < 2:
        return whole(f"{_plural(n, 'item')} in {quote(field)}, nothing to split", n)
    analysis = analyse(request, n, config)
    slots = max(0, request.free_slots)
    most = request.max_items_per_part
    need = math.ceil(n / most) if most > 0 else 1
    if need > config.max_parts:
        problem = (
            f"payload lists {n} {field}, more than {config.max_parts} parts of at most {most} "
            f"can carry"
        )
        fix = f"send at most {config.max_parts * most} {field} per task"
        return split_error(name, "splitter", problem, fix)
    parts, why, capped = _count_parts(analysis, slots, field, config)
    limit = ""
    if parts < need:
        parts, limit = need, f", at most {most} per part"
    if parts < 2:
        return whole(why, n, analysis)
    ranges = balanced_ranges(n, parts)
    out = [_part(i, r, doc, items, field, analysis, request, config) for i, r in enumerate(ranges)]
    strategy = Strategy.ASYNC_BATCHES if analysis.io_bound else Strategy.PARALLEL_CHUNKS
    shape = "async batches" if analysis.io_bound else "chunks"
    cap = f", capped at {config.max_parts} parts" if capped else ""
    reason = (
        f"split {n} {field} into {parts} {shape} of {_sizes(ranges)}: "
        f"{ratio_text(analysis, request.kind)}, {_plural(slots, 'free slot')}{cap}{limit}"
    )
    return Plan(name, strategy, tuple(out), n, reason, field, False, analysis)


def _count_parts(
    analysis: Analysis, slots: int, field: str, config: DecomposerConfig
) -> tuple[int, str, bool]:
    """(parts, why not when under 2, whether the cap cut them) by the module's formulas."""
    n, t = analysis.items, analysis.item_s
    if t <= 0:
        return 1, f"no cost estimate for {field} yet", False
    if slots < 2:
        return 1, f"{_plural(slots, 'free slot')}: parts would only queue", False
    floor = config.overhead_floor_s
    # The epsilon keeps 0.05 / 0.01 (5.000000000000001 in floats) from asking for 6 items.
    least = max(1, math.ceil(floor / t - 1e-9)) if floor > 0 else 1
    c = analysis.concurrency
    fit = math.ceil(n / (c * least)) if analysis.io_bound else n // least
    wanted = min(slots, fit)
    parts = min(wanted, config.max_parts)
    if analysis.io_bound and least == 1:
        why = f"io-bound, {n} {field} fit one async batch of {c}"
    else:
        per = "per wave" if analysis.io_bound else "per item"
        why = (
            f"{n} {field} at {t:.3g} s {per} are too cheap to split: a part would fall "
            f"under the {floor:g} s overhead floor"
        )
    return parts, why, wanted > parts


def _part(
    index: int,
    r: range,
    doc: dict[str, Any],
    items: list[Any],
    field: str,
    analysis: Analysis,
    request: SplitRequest,
    config: DecomposerConfig,
) -> Part:
    """One chunk or batch. Without a cost estimate (a split forced by ``max_items_per_part``)
    its timeout is the parent's (0 = the scheduler's default), there being nothing to predict
    from."""
    units = math.ceil(len(r) / analysis.concurrency)
    if analysis.item_s > 0:
        timeout = part_timeout(analysis.item_p90_s, units, request.parent_timeout_s, config)
    else:
        timeout = max(0.0, request.parent_timeout_s)
    return Part(
        index=index,
        payload=part_payload(doc, field, items[r.start : r.stop]),
        items=r,
        depends_on=(),
        timeout_s=timeout,
        est_duration_s=units * analysis.item_s,
    )
