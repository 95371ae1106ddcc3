"""Decomposer: split decisions with exact plans (io versus cpu, boundaries, part timeouts, bad
payloads).

Pure code, no clock: every expected plan below is worked out by hand from the formulas in
``deerflow_controller.decomposer._plan`` (floor 0.05 s, cap 64 parts, 16 items in flight per io
task, timeout = max(5 s, 3 x p90 x units)).
"""

from __future__ import annotations

import json

import pytest

from deerflow_controller.core.model import SplitPolicy
from deerflow_controller.decomposer import (
    Decomposer,
    DecomposerConfig,
    Plan,
    SplitRequest,
    Strategy,
)

from .decomposing import (
    DECOMPOSER,
    assert_split_error,
    cpu_request,
    error_of,
    plan_of,
    request,
    sizes,
    urls,
)

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
