"""Decomposer: split decisions with exact plans, merges in item order, and bad input.

Pure code, no clock: every expected plan below is worked out by hand from the formulas in
``deerflow_controller.decomposer._plan`` (floor 0.05 s, cap 64 parts, 16 items in flight per io
task, timeout = max(5 s, 3 x p90 x units)).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import pytest

from deerflow_controller.decomposer import (
    Decomposer,
    DecomposerConfig,
    ItemError,
    MergeResult,
    Part,
    PartOutcome,
    Plan,
    SplitRequest,
    Strategy,
    merge_parts,
)
from deerflow_controller.model import ErrorClass, ErrorKind, SplitPolicy, TaskError

DECOMPOSER = Decomposer()


def urls(n: int) -> list[str]:
    return [f"https://example.test/{i}" for i in range(n)]


def request(
    items: list[Any] | None = None,
    *,
    kind: Literal["io", "cpu"] = "io",
    item_s: float = 5.5,
    item_p90_s: float = 12.0,
    io_fraction: float | None = 0.975,
    free_slots: int = 8,
    field: str = "urls",
    payload: bytes | None = None,
    **extra: Any,
) -> SplitRequest:
    body = payload if payload is not None else json.dumps({field: items or []}).encode()
    return SplitRequest(
        handler="crawl",
        payload=body,
        items_field=field,
        kind=kind,
        item_s=item_s,
        item_p90_s=item_p90_s,
        io_fraction=io_fraction,
        free_slots=free_slots,
        **extra,
    )


def cpu_request(n: int, *, item_s: float, free_slots: int = 8, **extra: Any) -> SplitRequest:
    return request(
        list(range(n)),
        kind="cpu",
        item_s=item_s,
        item_p90_s=item_s * 2,
        io_fraction=0.05,
        free_slots=free_slots,
        field="items",
        **extra,
    )


def plan_of(req: SplitRequest, decomposer: Decomposer = DECOMPOSER) -> Plan:
    plan = decomposer.plan(req)
    assert isinstance(plan, Plan), plan
    return plan


def sizes(plan: Plan) -> list[int]:
    return [len(p.items) for p in plan.parts]


def error_of(result: Plan | TaskError | MergeResult | None) -> TaskError:
    if isinstance(result, MergeResult):
        assert result.error is not None, result
        return result.error
    assert isinstance(result, TaskError), result
    return result


def assert_split_error(error: TaskError, stage: str) -> None:
    assert error.kind is ErrorKind.SPLIT_ERROR
    assert error.message.startswith(f"handler 'crawl' {stage}: "), error.message
    assert not error.retryable
    assert error.error_class is ErrorClass.FATAL


# ----------------------------------------------------------------- io versus cpu


def test_io_bound_urls_become_async_batches_filling_the_free_slots() -> None:
    plan = plan_of(request(urls(120)))

    assert plan.strategy is Strategy.ASYNC_BATCHES
    assert plan.reason == (
        "split 120 urls into 8 async batches of 15: io-bound (wall/cpu 40x), 8 free slots"
    )
    assert plan.item_count == 120
    assert [p.items for p in plan.parts] == [range(i * 15, i * 15 + 15) for i in range(8)]
    assert all(p.depends_on == () for p in plan.parts)
    # 15 items fit one wave of 16: one p90 wave, times the safety factor.
    assert {p.timeout_s for p in plan.parts} == {3 * 12.0}
    assert {p.est_duration_s for p in plan.parts} == {5.5}
    assert json.loads(plan.parts[2].payload) == {"urls": urls(120)[30:45]}


def test_cpu_bound_items_become_one_chunk_per_free_slot() -> None:
    plan = plan_of(cpu_request(40, item_s=0.02))

    assert plan.strategy is Strategy.PARALLEL_CHUNKS
    assert (
        plan.reason == "split 40 items into 8 chunks of 5: cpu-bound (wall/cpu 1.1x), 8 free slots"
    )
    assert sizes(plan) == [5] * 8
    assert plan.parts[0].est_duration_s == pytest.approx(0.1)
    assert plan.parts[0].timeout_s == 5.0  # 3 x 0.04 x 5 = 0.6 s is under the floor


def test_measured_cpu_work_in_an_io_handler_is_chunked_not_batched() -> None:
    plan = plan_of(request(urls(40), io_fraction=0.3, item_s=1.0, item_p90_s=2.0))

    assert plan.strategy is Strategy.PARALLEL_CHUNKS
    assert (
        plan.reason == "split 40 urls into 8 chunks of 5: cpu-bound (wall/cpu 1.4x), 8 free slots"
    )
    assert plan.parts[0].timeout_s == 3 * 2.0 * 5


def test_a_waiting_cpu_handler_is_chunked_because_its_items_cannot_overlap() -> None:
    plan = plan_of(request(urls(16), kind="cpu", io_fraction=0.99, item_s=1.0))

    assert plan.strategy is Strategy.PARALLEL_CHUNKS
    assert plan.reason == (
        "split 16 urls into 8 chunks of 2: waiting but a cpu handler (no overlap inside one "
        "task) (wall/cpu 100x), 8 free slots"
    )


def test_an_unmeasured_handler_is_judged_by_its_declared_kind() -> None:
    io = plan_of(request(urls(64), io_fraction=None))
    cpu = plan_of(request(list(range(64)), kind="cpu", io_fraction=None, item_s=1.0))

    assert io.strategy is Strategy.ASYNC_BATCHES
    assert (
        io.reason
        == "split 64 urls into 4 async batches of 16: io-bound (declared io), 8 free slots"
    )
    assert cpu.strategy is Strategy.PARALLEL_CHUNKS
    assert cpu.reason.endswith("cpu-bound (declared cpu), 8 free slots")


def test_a_long_io_list_gets_fewer_larger_batches_run_in_waves() -> None:
    plan = plan_of(request(urls(1000)))

    assert sizes(plan) == [125] * 8
    # 125 items in waves of 16: 8 waves.
    assert plan.parts[0].est_duration_s == 8 * 5.5
    assert plan.parts[0].timeout_s == 3 * 12.0 * 8


def test_async_batches_follow_the_handlers_declared_concurrency() -> None:
    plan = plan_of(request(urls(20), item_concurrency=4))

    assert (
        plan.reason
        == "split 20 urls into 5 async batches of 4: io-bound (wall/cpu 40x), 8 free slots"
    )


# ----------------------------------------------------------------- boundaries


def test_a_single_item_is_not_split() -> None:
    plan = plan_of(request(urls(1)))

    assert plan == Plan(
        "crawl", Strategy.NONE, (), 1, "not split: 1 item in 'urls', nothing to split", "urls"
    )
    assert not plan.split


def test_fewer_items_than_slots_give_one_chunk_per_item() -> None:
    plan = plan_of(cpu_request(3, item_s=1.0))

    assert sizes(plan) == [1, 1, 1]
    assert (
        plan.reason == "split 3 items into 3 chunks of 1: cpu-bound (wall/cpu 1.1x), 8 free slots"
    )


def test_chunks_never_fall_under_the_overhead_floor() -> None:
    # 0.05 / 0.02 -> at least 3 items per chunk; 10 // 3 = 3 chunks, though 8 slots are free.
    plan = plan_of(cpu_request(10, item_s=0.02))

    assert sizes(plan) == [4, 3, 3]
    assert (
        plan.reason
        == "split 10 items into 3 chunks of 3-4: cpu-bound (wall/cpu 1.1x), 8 free slots"
    )
    assert min(p.est_duration_s for p in plan.parts) >= 0.05


def test_the_overhead_floor_is_exact_at_a_whole_number_of_items() -> None:
    # 0.05 / 0.01 is 5.000000000000001 in floats: still 5 items per chunk, so 10 items make 2.
    assert sizes(plan_of(cpu_request(10, item_s=0.01))) == [5, 5]


def test_a_task_too_cheap_to_pay_for_two_parts_is_not_split() -> None:
    plan = plan_of(cpu_request(4, item_s=0.01))

    assert plan.strategy is Strategy.NONE
    assert plan.reason == (
        "not split: 4 items at 0.01 s per item are too cheap to split: a part would fall under "
        "the 0.05 s overhead floor"
    )


def test_cheap_io_waves_are_grouped_up_to_the_overhead_floor() -> None:
    # one wave costs 0.02 s: a batch must run 3 waves (48 items), so 100 urls make 3 batches.
    plan = plan_of(request(urls(100), item_s=0.02, item_p90_s=0.04))

    assert sizes(plan) == [34, 33, 33]
    assert plan.strategy is Strategy.ASYNC_BATCHES


def test_io_items_that_fit_one_batch_are_not_split() -> None:
    plan = plan_of(request(urls(12)))

    assert plan.reason == "not split: io-bound, 12 urls fit one async batch of 16"


def test_a_huge_list_is_capped_at_max_parts() -> None:
    plan = plan_of(cpu_request(100_000, item_s=0.01, free_slots=200))

    assert len(plan.parts) == 64
    assert sizes(plan)[:32] == [1563] * 32 and sizes(plan)[32:] == [1562] * 32
    assert plan.parts[-1].items == range(100_000 - 1562, 100_000)
    assert plan.reason == (
        "split 100000 items into 64 chunks of 1562-1563: cpu-bound (wall/cpu 1.1x), "
        "200 free slots, capped at 64 parts"
    )


def test_a_list_longer_than_the_handler_takes_is_split_whatever_the_slots() -> None:
    plan = plan_of(request(urls(250), free_slots=1, max_items_per_part=100))

    assert sizes(plan) == [84, 83, 83]
    assert plan.reason == (
        "split 250 urls into 3 async batches of 83-84: io-bound (wall/cpu 40x), 1 free slot, "
        "at most 100 per part"
    )


def test_a_forced_split_without_a_cost_estimate_keeps_the_parents_timeout() -> None:
    plan = plan_of(request(urls(150), item_s=0.0, max_items_per_part=100, parent_timeout_s=60))

    assert sizes(plan) == [75, 75]
    assert {p.timeout_s for p in plan.parts} == {60.0}
    assert {p.est_duration_s for p in plan.parts} == {0.0}


def test_a_list_too_long_for_max_parts_of_the_handlers_limit_fails_with_split_error() -> None:
    error = error_of(DECOMPOSER.plan(request(urls(6401), max_items_per_part=100)))

    assert_split_error(error, "splitter")
    assert error.message == (
        "handler 'crawl' splitter: payload lists 6401 urls, more than 64 parts of at most 100 can "
        "carry; send at most 6400 urls per task"
    )


@pytest.mark.parametrize(
    ("free_slots", "reason"),
    [
        (0, "not split: 0 free slots: parts would only queue"),
        (1, "not split: 1 free slot: parts would only queue"),
    ],
)
def test_without_two_free_slots_nothing_is_split(free_slots: int, reason: str) -> None:
    assert plan_of(cpu_request(40, item_s=1.0, free_slots=free_slots)).reason == reason


def test_split_never_and_handlers_without_items_run_whole() -> None:
    never = plan_of(request(urls(100), policy=SplitPolicy.NEVER))
    no_field = plan_of(request(payload=b"not even json", field=""))

    assert never.reason == "not split: the submitter set split=NEVER"
    assert no_field.reason == "not split: handler 'crawl' declares no items field"
    assert never.parts == () and no_field.parts == ()


def test_without_a_cost_estimate_nothing_is_split() -> None:
    assert (
        plan_of(request(urls(100), item_s=0.0)).reason == "not split: no cost estimate for urls yet"
    )


@pytest.mark.parametrize("item_s", [float("nan"), float("inf"), -1.0])
def test_a_predictor_answer_that_is_not_a_duration_means_no_estimate(item_s: float) -> None:
    plan = plan_of(request(urls(100), item_s=item_s))

    assert plan.reason == "not split: no cost estimate for urls yet"


def test_non_finite_p90_and_io_fraction_fall_back_to_typical_and_declared() -> None:
    plan = plan_of(request(urls(120), item_p90_s=float("inf"), io_fraction=float("nan")))

    assert plan.reason == (
        "split 120 urls into 8 async batches of 15: io-bound (declared io), 8 free slots"
    )
    assert {p.timeout_s for p in plan.parts} == {3 * 5.5}


def test_other_payload_fields_are_kept_in_every_part() -> None:
    body = {"depth": 2, "urls": urls(32), "note": "résumé", "opts": {"js": True}}
    plan = plan_of(request(payload=json.dumps(body).encode()))

    assert (
        plan.parts[1].payload
        == json.dumps(
            {"depth": 2, "urls": urls(32)[16:], "note": "résumé", "opts": {"js": True}},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
    )


# ----------------------------------------------------------------- timeouts


def test_part_timeouts_come_from_predictions_not_from_dividing_the_parents() -> None:
    plan = plan_of(request(urls(120), parent_timeout_s=300.0))

    assert {p.timeout_s for p in plan.parts} == {36.0}  # not 300 / 8 = 37.5


def test_a_part_never_gets_longer_than_the_parent_was_allowed() -> None:
    plan = plan_of(request(urls(1000), parent_timeout_s=100.0))

    assert {p.timeout_s for p in plan.parts} == {100.0}  # predicted 288 s


def test_a_part_timeout_has_a_floor_and_follows_the_config() -> None:
    config = DecomposerConfig(timeout_safety=2.0, timeout_floor_s=1.0)
    plan = plan_of(cpu_request(40, item_s=0.1), Decomposer(config))

    assert {p.timeout_s for p in plan.parts} == {2.0 * 0.2 * 5}
    assert {p.timeout_s for p in plan_of(cpu_request(40, item_s=0.02)).parts} == {5.0}


# ----------------------------------------------------------------- bad payloads


def test_a_payload_without_the_items_field_runs_whole() -> None:
    """crawl also takes {"url": ...}: the handler's single-item form is not a split error."""
    plan = Decomposer().plan(
        SplitRequest("crawl", b'{"url": "a"}', "urls", "io", item_s=1.0, free_slots=8)
    )
    assert isinstance(plan, Plan) and not plan.split


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "payload is not JSON (Expecting value: line 1 column 1)"),
        (b'{"urls": [1,', "payload is not JSON (Expecting value: line 1 column 13)"),
        (
            b"\xc3\x28",
            "payload is not JSON text (utf-8 cannot decode it: invalid continuation byte)",
        ),
        (b"[" * 100_000, "payload is JSON nested too deeply to parse"),
        (b'["a", "b"]', "payload is a JSON array, not an object"),
        (b'{"urls": "https://a"}', "payload field 'urls' is a JSON string, not an array"),
        (b'{"urls": null}', "payload field 'urls' is a JSON null, not an array"),
        (
            b'{"urls": [' + b"7" * 5000 + b"]}",
            "payload cannot be decoded (Exceeds the limit (4300 digits) for integer string "
            "conversion: value has 5000 digits; use sys.set_int_max_str_digits() to increase "
            "the limit)",
        ),
    ],
)
def test_a_payload_that_cannot_be_split_fails_with_split_error(
    payload: bytes, problem: str
) -> None:
    error = error_of(DECOMPOSER.plan(request(payload=payload)))

    assert_split_error(error, "splitter")
    assert error.message == (
        f"handler 'crawl' splitter: {problem}; send a JSON object with a list in 'urls' or set "
        "split=NEVER"
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
