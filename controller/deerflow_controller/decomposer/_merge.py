"""Merging a split task's parts back into the parent's one, ordered result.

**Default merged output** (item plans: chunks and async batches, without a merger), compact
UTF-8 JSON::

    {"items": [r0, r1, null, ...], "errors": [{"index": 2, "part": 0, "error": "..."}]}

``items`` holds one result per item of the parent's list, in item order whatever order the parts
finished in; a failed item's slot is ``null``. ``errors`` lists each failed item (index in the
parent's list, the part that carried it, a sentence), in item order. A part's output must be a
JSON array with one result per item it carried, or an object with that array under ``items`` or
``results`` and optionally ``errors`` of the shape above (so an io handler can report its own
per-item failures, which are kept with their indices shifted). When the parts used ``results``
the merged output does too, so a split task's result reads like the unsplit task's.

**Pipelines** without a merger: the parent's output is the last stage's output, unchanged.
**With the handler's merger**: its bytes, unchanged; per-item failures are in
:attr:`MergeResult.item_errors` (and the detail sentence), since the format is the handler's.

**Fail fast** (``partial_results=False``, and always for pipelines): the first failed part fails
the parent at once; the parts still running should be cancelled. **Partial**: the parent waits
for every part and succeeds with what succeeded, unless every part failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from deerflow_common.errors import TaskError
from deerflow_controller.core.validation import quote
from deerflow_controller.decomposer._model import Merger, Part, Plan, Strategy, split_error
from deerflow_controller.decomposer._payload import json_type

__all__ = ["ItemError", "MergeResult", "PartCollector", "PartOutcome", "merge_parts"]

_FIX = "return a JSON array with one result per item, or install a merger"


@dataclass(frozen=True, slots=True)
class PartOutcome:
    """How one part ended: its output when it succeeded, its final error (after its own
    retries) when it did not."""

    index: int
    output: bytes = b""
    error: TaskError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class ItemError:
    """One failed item: its index in the parent's list (None for a part that carried no item
    range), the part that carried it, and why, in a sentence."""

    index: int | None
    part: int
    message: str


@dataclass(frozen=True, slots=True)
class MergeResult:
    """The parent's outcome: ``output`` when ``error`` is None, else the parent fails with
    ``error``. ``cancel_parts`` are parts still unfinished when a failure decided the parent."""

    output: bytes
    error: TaskError | None
    item_errors: tuple[ItemError, ...]
    detail: str
    """One sentence for the parent's terminal event."""
    cancel_parts: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


def _where(plan: Plan, part: Part) -> str:
    """'part 3 of 8 (urls 45-59)', 'stage 2 of 3'."""
    total = len(plan.parts)
    if plan.strategy is Strategy.PIPELINE:
        return f"stage {part.index} of {total}"
    r, noun = part.items, plan.items_field or "items"
    if not r:
        return f"part {part.index} of {total}"
    span = f"{r.start}" if len(r) == 1 else f"{r.start}-{r.stop - 1}"
    return f"part {part.index} of {total} ({noun} {span})"


def _part_failed(plan: Plan, part: Part, error: TaskError) -> TaskError:
    """The parent's error when one part's failure fails it: the part's kind and class, not
    retryable (the part had its own retries)."""
    message = f"{_where(plan, part)} failed: {error.message}"
    return TaskError(error.kind, message, retryable=False, error_class=error.error_class)


_LIST_KEYS = ("items", "results")
"""Object keys a part's output may hold its per-item list under; the merged output uses the
key the parts used, so a split task's result reads like the unsplit one's."""


def _results(output: bytes, part: Part) -> tuple[list[Any], list[tuple[int, str]], str] | str:
    """A part's per-item results, the failures it reported itself (local index, sentence) and
    the key it used ("" for a bare array), or a sentence saying why it breaks the contract."""
    try:
        doc = json.loads(output)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError too
        return f"output is not JSON ({exc})"
    own: list[tuple[int, str]] | str = []
    key = ""
    if isinstance(doc, dict):
        key = next((k for k in _LIST_KEYS if isinstance(doc.get(k), list)), "")
        if key:
            own = _own_errors(doc.get("errors"), len(part.items))
            doc = doc[key]
    if isinstance(own, str):
        return own
    if not isinstance(doc, list):
        return f"output is a JSON {json_type(doc)}, not an array of results"
    if len(doc) != len(part.items):
        return f"output has {len(doc)} results for {len(part.items)} items"
    return doc, own, key


def _own_errors(raw: object, count: int) -> list[tuple[int, str]] | str:
    """The per-item failures a part reported itself, or why its 'errors' field is unusable."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        return f"output's 'errors' is a JSON {json_type(raw)}, not an array"
    out: list[tuple[int, str]] = []
    for entry in raw:
        index = entry.get("index") if isinstance(entry, dict) else None
        if isinstance(index, bool) or not isinstance(index, int):
            return "output has an 'errors' entry without an integer 'index'"
        if not 0 <= index < count:
            return f"output reports an error for item {index}, outside its {count}"
        out.append((index, str(entry.get("error", ""))))
    return out


def _dump(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _custom_merge(plan: Plan, merger: Merger, outputs: Sequence[bytes | None]) -> bytes | TaskError:
    try:
        out = merger(outputs)
    except Exception as exc:
        problem = f"raised {type(exc).__name__}: {exc}"
        return split_error(plan.handler, "merger", problem, "fix the handler's merger")
    if not isinstance(out, bytes | bytearray):
        problem = f"returned {type(out).__name__}, not bytes"
        return split_error(plan.handler, "merger", problem, "return the merged output as bytes")
    return bytes(out)


def merge_parts(
    plan: Plan,
    outcomes: Iterable[PartOutcome],
    *,
    partial_results: bool,
    merger: Merger | None = None,
) -> MergeResult:
    """The parent's result from the final outcome of every part (any order; a repeated index
    keeps its first outcome). Bad outputs and a failing merger give a SPLIT_ERROR result; raises
    ValueError only when a part's outcome is missing, a bug in the caller."""
    by_index: dict[int, PartOutcome] = {}
    for o in outcomes:
        by_index.setdefault(o.index, o)
    missing = [p.index for p in plan.parts if p.index not in by_index]
    if missing:
        raise ValueError(f"merge of a {quote(plan.handler)} task is missing parts {missing}")
    partial = partial_results and plan.strategy is not Strategy.PIPELINE
    failures: list[tuple[Part, TaskError]] = []
    for part in plan.parts:
        error = by_index[part.index].error
        if error is not None:
            failures.append((part, error))
    if failures and (not partial or len(failures) == len(plan.parts)):
        part, error = failures[0]
        failed = _part_failed(plan, part, error)
        if len(failures) > 1:
            n = len(plan.parts)
            how_many = f"all {n}" if len(failures) == n else f"{len(failures)} of {n}"
            message = f"{how_many} parts failed; first, {failed.message}"
            failed = TaskError(failed.kind, message, False, error_class=failed.error_class)
        return MergeResult(b"", failed, _item_errors(failures), failed.message)
    if merger is not None or plan.strategy is Strategy.PIPELINE:
        return _merge_whole(plan, by_index, failures, merger)
    return _merge_items(plan, by_index, failures, partial)


def _item_errors(failures: Sequence[tuple[Part, TaskError]]) -> tuple[ItemError, ...]:
    out: list[ItemError] = []
    for part, error in failures:
        if part.items:
            out.extend(ItemError(i, part.index, error.message) for i in part.items)
        else:
            out.append(ItemError(None, part.index, error.message))
    return tuple(out)


def _merge_whole(
    plan: Plan,
    by_index: dict[int, PartOutcome],
    failures: list[tuple[Part, TaskError]],
    merger: Merger | None,
) -> MergeResult:
    """The handler's merger, or a pipeline's last stage."""
    n = len(plan.parts)
    if merger is None:
        last = plan.parts[-1]
        detail = f"pipeline of {n} stages succeeded; result of stage {last.index}"
        return MergeResult(by_index[last.index].output, None, (), detail)
    failed = {part.index for part, _ in failures}
    outputs = [None if p.index in failed else by_index[p.index].output for p in plan.parts]
    out = _custom_merge(plan, merger, outputs)
    if isinstance(out, TaskError):
        return MergeResult(b"", out, _item_errors(failures), out.message)
    errors = _item_errors(failures)
    detail = f"merged {n} parts with handler {quote(plan.handler)}'s merger"
    if failures:
        part, error = failures[0]
        detail += f"; {len(failures)} failed (first, {_where(plan, part)}: {error.message})"
    return MergeResult(out, None, errors, detail)


def _merge_items(
    plan: Plan,
    by_index: dict[int, PartOutcome],
    failures: list[tuple[Part, TaskError]],
    partial: bool,
) -> MergeResult:
    """The default merge: one result per item, in item order (see the module docstring)."""
    failed = {part.index: error for part, error in failures}
    items: list[Any] = []
    errors: list[ItemError] = []
    first: tuple[Part, TaskError] | None = None
    broken = 0
    key = ""
    for part in plan.parts:
        error = failed.get(part.index)
        if error is None:
            parsed = _results(by_index[part.index].output, part)
            if not isinstance(parsed, str):
                results, own, used = parsed
                key = key or used
                items.extend(results)
                errors.extend(ItemError(part.items[j], part.index, m) for j, m in sorted(own))
                continue
            error = split_error(plan.handler, "merger", f"{_where(plan, part)} {parsed}", _FIX)
            if not partial:
                return MergeResult(b"", error, (), error.message)
        broken += 1
        first = first or (part, error)
        items.extend([None] * len(part.items))
        errors.extend(ItemError(i, part.index, error.message) for i in part.items)
    if first is not None and broken == len(plan.parts):
        whole = _part_failed(plan, *first)
        message = f"all {broken} parts failed; first, {whole.message}"
        whole = TaskError(whole.kind, message, False, error_class=whole.error_class)
        return MergeResult(b"", whole, tuple(errors), whole.message)
    body = {
        key or "items": items,
        "errors": [{"index": e.index, "part": e.part, "error": e.message} for e in errors],
    }
    noun = plan.items_field or "items"
    n = plan.item_count
    if errors:
        detail = (
            f"merged {len(plan.parts)} parts: {n - len(errors)} of {n} {noun} succeeded, "
            f"{len(errors)} failed"
        )
        if first is not None:
            detail += f" (first, {_where(plan, first[0])}: {first[1].message})"
    else:
        detail = f"merged {len(plan.parts)} parts: all {n} {noun} succeeded"
    return MergeResult(_dump(body), None, tuple(errors), detail)


class PartCollector:
    """Collects a split task's part outcomes as they arrive, in any order, and says when the
    parent is decided: at the first failure when failing fast, else once every part has ended.
    Pure: the caller applies the result (finish the parent, cancel ``cancel_parts``)."""

    def __init__(self, plan: Plan, *, partial_results: bool, merger: Merger | None = None) -> None:
        self.plan = plan
        self.partial_results = partial_results and plan.strategy is not Strategy.PIPELINE
        self.merger = merger
        self._outcomes: dict[int, PartOutcome] = {}
        self._parts = {p.index: p for p in plan.parts}
        self.result: MergeResult | None = None

    @property
    def pending(self) -> tuple[int, ...]:
        """Parts with no outcome yet, in part order."""
        return tuple(i for i in self._parts if i not in self._outcomes)

    def add(self, outcome: PartOutcome) -> MergeResult | None:
        """Record one part's final outcome; returns the parent's result the one time it becomes
        decided, None otherwise (undecided, already decided, unknown or repeated part)."""
        if self.result is not None or outcome.index not in self._parts:
            return None
        if outcome.index in self._outcomes:
            return None
        self._outcomes[outcome.index] = outcome
        if outcome.error is not None and not self.partial_results:
            failed = _part_failed(self.plan, self._parts[outcome.index], outcome.error)
            self.result = MergeResult(
                b"",
                failed,
                _item_errors([(self._parts[outcome.index], outcome.error)]),
                failed.message,
                self.pending,
            )
            return self.result
        if self.pending:
            return None
        self.result = merge_parts(
            self.plan,
            self._outcomes.values(),
            partial_results=self.partial_results,
            merger=self.merger,
        )
        return self.result
