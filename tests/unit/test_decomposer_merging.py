"""Decomposer: a handler's own splitter, merges in item order, and bad merge input. Pure code,
no clock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest

from deerflow_controller.core.model import ErrorClass, ErrorKind, TaskError
from deerflow_controller.decomposer import (
    DecomposerConfig,
    ItemError,
    MergeResult,
    Part,
    PartOutcome,
    Plan,
    Strategy,
    merge_parts,
)

from .decomposing import (
    DECOMPOSER,
    assert_split_error,
    cpu_request,
    error_of,
    plan_of,
    request,
    urls,
)

# ----------------------------------------------------------------- a handler's own splitter


@dataclass(frozen=True)
class Stage:
    payload: bytes
    depends_on: Sequence[int] = ()
    items: range | tuple[int, int] | None = None
    est_duration_s: float = 0.0


def test_a_splitter_returning_dependent_stages_makes_a_pipeline() -> None:
    def splitter(payload: bytes) -> list[Stage]:
        return [Stage(b"fetch"), Stage(b"parse", (0,), est_duration_s=2.0), Stage(b"index", [1])]

    plan = DECOMPOSER.plan(request(urls(3)), splitter=splitter)
    assert isinstance(plan, Plan)
    # The splitter's 2 s estimate, stretched by the handler's tail (p90 12 s / typical 5.5 s).
    parse_timeout = plan.parts[1].timeout_s
    assert parse_timeout == pytest.approx(3 * 2.0 * 12.0 / 5.5)

    assert replace(plan, analysis=None) == Plan(
        "crawl",
        Strategy.PIPELINE,
        (
            Part(0, b"fetch", range(0), (), 36.0, 5.5),
            Part(1, b"parse", range(0), (0,), parse_timeout, 2.0),
            Part(2, b"index", range(0), (1,), 36.0, 5.5),
        ),
        0,
        "split 3 pipeline stages by handler 'crawl''s splitter: io-bound (wall/cpu 40x)",
        "urls",
        True,
    )


def test_a_splitter_with_item_ranges_is_merged_by_default() -> None:
    def splitter(payload: bytes) -> list[Stage | bytes]:
        return [Stage(b"a", items=range(0, 2)), Stage(b"b", items=(2, 5))]

    plan = DECOMPOSER.plan(request(urls(5), io_fraction=0.1, item_s=1.0), splitter=splitter)
    assert isinstance(plan, Plan)

    assert plan.strategy is Strategy.PARALLEL_CHUNKS
    assert (
        plan.reason
        == "split 5 urls into 2 chunks by handler 'crawl''s splitter: cpu-bound (wall/cpu 1.1x)"
    )
    assert [p.items for p in plan.parts] == [range(0, 2), range(2, 5)]
    merged = merge_parts(
        plan,
        [PartOutcome(1, b'["c","d","e"]'), PartOutcome(0, b'["a","b"]')],
        partial_results=False,
    )
    assert merged.output == b'{"items":["a","b","c","d","e"],"errors":[]}'


def test_a_splitter_returning_one_part_leaves_the_task_whole() -> None:
    plan = DECOMPOSER.plan(request(urls(3)), splitter=lambda payload: [payload])

    assert isinstance(plan, Plan) and plan.strategy is Strategy.NONE
    assert plan.reason == "not split: handler 'crawl''s splitter returned one part"


class _Exploding:
    @property
    def payload(self) -> bytes:
        raise RuntimeError("lazy payload broke")


@pytest.mark.parametrize(
    ("returned", "problem"),
    [
        (7, "returned int, not a list of parts"),
        (b"abc", "returned bytes, not a list of parts"),
        ([], "returned no parts"),
        ([b"x", "y"], "part 1 is a str, not bytes or an object with a bytes payload"),
        ([b"x", Stage("y")], "part 1 payload is str, not bytes"),  # type: ignore[arg-type]
        ([b"x", Stage(b"y", (1,))], "part 1 depends on part 1, which is not an earlier part"),
        ([b"x", Stage(b"y", (5,))], "part 1 depends on part 5, which is not an earlier part"),
        ([b"x", Stage(b"y", ("0",))], "part 1 depends_on entry is str '0', not an int"),  # type: ignore[arg-type]
        ([b"x", Stage(b"y", 0)], "part 1 depends_on is int, not a list of ints"),  # type: ignore[arg-type]
        (
            [Stage(b"x", items=range(0, 9, 2)), b"y"],
            "part 0 items 0..9 (step 2) is not a range of indices",
        ),
        ([Stage(b"x", items=(3, 1)), b"y"], "part 0 items 3..1 (step 1) is not a range of indices"),
        ([Stage(b"x", items=[0, 1]), b"y"], "part 0 items is list, not a range or (start, stop)"),  # type: ignore[arg-type]
        (
            [Stage(b"x", est_duration_s=-1), b"y"],
            "part 0 est_duration_s is -1, not a number of seconds >= 0",
        ),
        (
            [Stage(b"x", items=range(0, 2)), b"y"],
            "part 1 has no items range; independent parts merged by default must say which items "
            "they carry (items=range(start, stop)), or install a merger",
        ),
        (
            [Stage(b"x", items=range(0, 2)), Stage(b"y", items=range(1, 3))],
            "part 1 carries items 1..2 but the next item is 2; parts must cover the items in "
            "order, once each",
        ),
        ([_Exploding(), b"y"], "its parts could not be read (RuntimeError: lazy payload broke)"),
    ],
)
def test_a_splitter_returning_unschedulable_parts_fails_with_split_error(
    returned: Any, problem: str
) -> None:
    error = error_of(DECOMPOSER.plan(request(urls(3)), splitter=lambda payload: returned))

    assert_split_error(error, "splitter")
    fix = "fix the handler's splitter or set split=NEVER"
    assert error.message == f"handler 'crawl' splitter: {problem}; {fix}"


def test_a_splitter_returning_more_parts_than_the_cap_fails_with_split_error() -> None:
    error = error_of(DECOMPOSER.plan(request(urls(3)), splitter=lambda payload: [b"x"] * 65))

    assert_split_error(error, "splitter")
    assert error.message == (
        "handler 'crawl' splitter: returned 65 parts, more than the cap of 64; return fewer, "
        "larger parts"
    )


def test_a_splitter_that_raises_fails_with_split_error_naming_the_exception() -> None:
    def splitter(payload: bytes) -> list[bytes]:
        raise KeyError("urls")

    error = error_of(DECOMPOSER.plan(request(urls(3)), splitter=splitter))

    assert_split_error(error, "splitter")
    assert error.message == (
        "handler 'crawl' splitter: raised KeyError: 'urls'; fix the handler's splitter or set "
        "split=NEVER"
    )


def test_independent_parts_need_no_ranges_when_the_handler_merges_them() -> None:
    def merger(outputs: Sequence[bytes | None]) -> bytes:
        return b"|".join(o if o is not None else b"-" for o in outputs)

    plan = DECOMPOSER.plan(request(urls(3)), splitter=lambda p: [b"a", b"b", b"c"], merger=merger)
    assert isinstance(plan, Plan) and plan.strategy is Strategy.ASYNC_BATCHES
    collector = DECOMPOSER.collector(plan, partial_results=True, merger=merger)

    assert collector.add(PartOutcome(2, b"C")) is None
    assert (
        collector.add(PartOutcome(0, error=TaskError(ErrorKind.TIMEOUT, "timed out after 36 s")))
        is None
    )
    result = collector.add(PartOutcome(1, b"B"))

    assert result is not None and result.ok
    assert result.output == b"-|B|C"
    assert result.item_errors == (ItemError(None, 0, "timed out after 36 s"),)
    assert result.detail == (
        "merged 3 parts with handler 'crawl''s merger; 1 failed (first, part 0 of 3: timed out "
        "after 36 s)"
    )


# ----------------------------------------------------------------- merging


def split_plan(n: int = 6, parts: int = 3) -> Plan:
    plan = plan_of(cpu_request(n, item_s=1.0, free_slots=parts))
    assert len(plan.parts) == parts
    return plan


def outputs_for(plan: Plan) -> dict[int, bytes]:
    return {p.index: json.dumps([f"r{i}" for i in p.items]).encode() for p in plan.parts}


def test_parts_finishing_out_of_order_merge_in_item_order() -> None:
    plan = split_plan()
    out = outputs_for(plan)
    collector = DECOMPOSER.collector(plan, partial_results=False)

    assert collector.add(PartOutcome(2, out[2])) is None
    assert collector.add(PartOutcome(0, out[0])) is None
    assert collector.pending == (1,)
    result = collector.add(PartOutcome(1, out[1]))

    assert result == MergeResult(
        b'{"items":["r0","r1","r2","r3","r4","r5"],"errors":[]}',
        None,
        (),
        "merged 3 parts: all 6 items succeeded",
    )


def test_fail_fast_fails_the_parent_at_the_first_failed_part_and_cancels_the_rest() -> None:
    plan = split_plan()
    collector = DECOMPOSER.collector(plan, partial_results=False)
    boom = TaskError(
        ErrorKind.HANDLER_ERROR, "crawl: 503 from reader", error_class=ErrorClass.TRANSIENT
    )

    assert collector.add(PartOutcome(0, outputs_for(plan)[0])) is None
    result = collector.add(PartOutcome(1, error=boom))

    assert result is not None
    assert result.error == TaskError(
        ErrorKind.HANDLER_ERROR,
        "part 1 of 3 (items 2-3) failed: crawl: 503 from reader",
        retryable=False,
        error_class=ErrorClass.TRANSIENT,
    )
    assert result.cancel_parts == (2,)
    assert result.item_errors == (
        ItemError(2, 1, "crawl: 503 from reader"),
        ItemError(3, 1, "crawl: 503 from reader"),
    )
    assert collector.add(PartOutcome(2, outputs_for(plan)[2])) is None  # already decided
    assert collector.result is result


def test_partial_results_keep_what_succeeded_and_report_each_failed_item() -> None:
    plan = split_plan()
    out = outputs_for(plan)
    timeout = TaskError(ErrorKind.TIMEOUT, "timed out after 5 s")
    collector = DECOMPOSER.collector(plan, partial_results=True)

    assert collector.add(PartOutcome(1, error=timeout)) is None
    assert collector.add(PartOutcome(2, out[2])) is None
    result = collector.add(PartOutcome(0, out[0]))

    assert result is not None and result.ok
    assert json.loads(result.output) == {
        "items": ["r0", "r1", None, None, "r4", "r5"],
        "errors": [
            {"index": 2, "part": 1, "error": "timed out after 5 s"},
            {"index": 3, "part": 1, "error": "timed out after 5 s"},
        ],
    }
    assert result.detail == (
        "merged 3 parts: 4 of 6 items succeeded, 2 failed (first, part 1 of 3 (items 2-3): "
        "timed out after 5 s)"
    )


def test_partial_results_fail_the_parent_when_every_part_failed() -> None:
    plan = split_plan(4, 2)
    boom = TaskError(ErrorKind.HANDLER_ERROR, "boom")

    result = merge_parts(
        plan, [PartOutcome(1, error=boom), PartOutcome(0, error=boom)], partial_results=True
    )

    assert error_of(result) == TaskError(
        ErrorKind.HANDLER_ERROR, "all 2 parts failed; first, part 0 of 2 (items 0-1) failed: boom"
    )
    assert len(result.item_errors) == 4


def test_failing_fast_over_all_outcomes_counts_the_failed_parts() -> None:
    plan = split_plan()
    boom = TaskError(ErrorKind.HANDLER_ERROR, "boom")
    outcomes = [PartOutcome(2, error=boom), PartOutcome(0, outputs_for(plan)[0])]

    result = merge_parts(plan, [*outcomes, PartOutcome(1, error=boom)], partial_results=False)

    assert error_of(result).message == (
        "2 of 3 parts failed; first, part 1 of 3 (items 2-3) failed: boom"
    )
    assert [e.index for e in result.item_errors] == [2, 3, 4, 5]


def test_per_item_errors_a_part_reports_itself_are_kept_at_the_parents_indices() -> None:
    plan = split_plan()
    out = outputs_for(plan)
    own = {"items": ["r2", None], "errors": [{"index": 1, "error": "empty page"}]}
    outcomes = [
        PartOutcome(0, out[0]),
        PartOutcome(1, json.dumps(own).encode()),
        PartOutcome(2, out[2]),
    ]

    result = merge_parts(plan, outcomes, partial_results=False)

    assert result.ok
    assert json.loads(result.output)["errors"] == [{"index": 3, "part": 1, "error": "empty page"}]
    assert result.detail == "merged 3 parts: 5 of 6 items succeeded, 1 failed"


def test_parts_answering_under_results_merge_under_results() -> None:
    plan = split_plan(4, 2)
    outcomes = [
        PartOutcome(1, b'{"results": [{"url": "c"}, {"url": "d"}]}'),
        PartOutcome(0, error=TaskError(ErrorKind.HANDLER_ERROR, "reader 503")),
    ]

    result = merge_parts(plan, outcomes, partial_results=True)

    assert result.output == (
        b'{"results":[null,null,{"url":"c"},{"url":"d"}],"errors":['
        b'{"index":0,"part":0,"error":"reader 503"},{"index":1,"part":0,"error":"reader 503"}]}'
    )


def test_a_repeated_outcome_of_a_part_is_ignored() -> None:
    plan = split_plan(4, 2)
    out = outputs_for(plan)
    collector = DECOMPOSER.collector(plan, partial_results=False)

    assert collector.add(PartOutcome(0, out[0])) is None
    assert collector.add(PartOutcome(0, b"garbage")) is None
    assert collector.add(PartOutcome(7, out[1])) is None  # not a part of this plan
    result = collector.add(PartOutcome(1, out[1]))

    assert result is not None and result.output == b'{"items":["r0","r1","r2","r3"],"errors":[]}'


def test_a_pipeline_returns_its_last_stage_and_always_fails_fast() -> None:
    plan = DECOMPOSER.plan(request(urls(2)), splitter=lambda p: [Stage(b"a"), Stage(b"b", (0,))])
    assert isinstance(plan, Plan)
    ok = DECOMPOSER.collector(plan, partial_results=True)
    failing = DECOMPOSER.collector(plan, partial_results=True)

    assert ok.add(PartOutcome(0, b"stage 0")) is None
    done = ok.add(PartOutcome(1, b"final report"))
    failed = failing.add(PartOutcome(0, error=TaskError(ErrorKind.FATAL, "bad plan")))

    assert done is not None and done.output == b"final report"
    assert done.detail == "pipeline of 2 stages succeeded; result of stage 1"
    assert failed is not None
    assert failed.error == TaskError(ErrorKind.FATAL, "stage 0 of 2 failed: bad plan")
    assert failed.cancel_parts == (1,)


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        (b"<html>", "output is not JSON (Expecting value: line 1 column 1 (char 0))"),
        (b'{"r": 1}', "output is a JSON object, not an array of results"),
        (b'["only one"]', "output has 1 results for 2 items"),
        (
            b'{"items": [1, 2], "errors": [{"error": "x"}]}',
            "output has an 'errors' entry without an integer 'index'",
        ),
        (b'{"items": [1, 2], "errors": "x"}', "output's 'errors' is a JSON string, not an array"),
        (
            b'{"items": [1, 2], "errors": [{"index": 2}]}',
            "output reports an error for item 2, outside its 2",
        ),
    ],
)
def test_a_part_output_breaking_the_merge_contract_fails_fast_with_split_error(
    output: bytes, problem: str
) -> None:
    plan = split_plan(4, 2)
    outcomes = [PartOutcome(0, outputs_for(plan)[0]), PartOutcome(1, output)]

    error = error_of(merge_parts(plan, outcomes, partial_results=False))

    assert_split_error(error, "merger")
    assert error.message == (
        f"handler 'crawl' merger: part 1 of 2 (items 2-3) {problem}; return a JSON array with one "
        "result per item, or install a merger"
    )


def test_a_part_output_breaking_the_merge_contract_is_reported_per_item_when_partial() -> None:
    plan = split_plan(4, 2)
    outcomes = [PartOutcome(0, outputs_for(plan)[0]), PartOutcome(1, b'["only one"]')]

    result = merge_parts(plan, outcomes, partial_results=True)

    assert result.ok
    body = json.loads(result.output)
    assert body["items"] == ["r0", "r1", None, None]
    assert [e["index"] for e in body["errors"]] == [2, 3]
    assert body["errors"][0]["error"].startswith("handler 'crawl' merger: part 1 of 2 (items 2-3)")


@pytest.mark.parametrize(
    ("merger", "problem"),
    [
        (
            lambda outputs: 1 / 0,
            "raised ZeroDivisionError: division by zero; fix the handler's merger",
        ),
        (lambda outputs: "text", "returned str, not bytes; return the merged output as bytes"),
    ],
)
def test_a_bad_merger_fails_the_parent_with_split_error(merger: Any, problem: str) -> None:
    plan = split_plan(4, 2)
    outcomes = [PartOutcome(i, o) for i, o in outputs_for(plan).items()]

    error = error_of(merge_parts(plan, outcomes, partial_results=False, merger=merger))

    assert_split_error(error, "merger")
    assert error.message == f"handler 'crawl' merger: {problem}"


def test_merging_without_every_parts_outcome_is_a_caller_bug() -> None:
    plan = split_plan(4, 2)

    with pytest.raises(ValueError, match=r"missing parts \[1\]"):
        merge_parts(plan, [PartOutcome(0, b"[]")], partial_results=True)


def test_the_config_rejects_settings_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="max_parts"):
        DecomposerConfig(max_parts=1)
    with pytest.raises(ValueError, match="io_bound_fraction"):
        DecomposerConfig(io_bound_fraction=0.0)


def test_a_request_the_decomposer_cannot_read_fails_the_task_instead_of_raising() -> None:
    bad = replace(request(urls(100)), free_slots="8")  # type: ignore[arg-type]

    error = error_of(DECOMPOSER.plan(bad))

    assert_split_error(error, "splitter")
    assert error.message == (
        "handler 'crawl' splitter: the decomposer failed (TypeError: '>' not supported between "
        "instances of 'str' and 'int'); set split=NEVER"
    )
