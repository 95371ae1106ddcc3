"""validate_job: a submitted job is accepted whole or refused with a sentence naming the problem."""

from __future__ import annotations

import math

import pytest

from deerflow_controller.core.model import TaskSpec
from deerflow_controller.core.validation import JobRejected, Limits, find_cycle, validate_job

LIMITS = Limits(max_payload_bytes=1024, max_tasks_per_job=50, max_retries=10)


def spec(
    task_id: str,
    *depends_on: str,
    handler: str = "echo",
    payload: bytes = b"",
    timeout_s: float = 0.0,
    max_retries: int = -1,
    schedule_to_start_s: float = 0.0,
    heartbeat_timeout_s: float = 0.0,
) -> TaskSpec:
    return TaskSpec(
        id=task_id,
        handler=handler,
        payload=payload,
        depends_on=depends_on,
        timeout_s=timeout_s,
        max_retries=max_retries,
        schedule_to_start_s=schedule_to_start_s,
        heartbeat_timeout_s=heartbeat_timeout_s,
    )


def rejection(specs: list[TaskSpec], limits: Limits = LIMITS) -> JobRejected:
    with pytest.raises(JobRejected) as caught:
        validate_job(specs, limits)
    return caught.value


def test_a_sound_job_with_a_diamond_of_dependencies_is_accepted() -> None:
    specs = [spec("a"), spec("b", "a"), spec("c", "a"), spec("d", "b", "c")]

    validate_job(specs, LIMITS)
    assert find_cycle(specs) == []


def test_an_empty_job_is_rejected() -> None:
    error = rejection([])

    assert error.message == "the job has no tasks; submit at least one task"
    assert not error.too_large


def test_a_duplicate_task_id_is_rejected_naming_the_id() -> None:
    error = rejection([spec("a"), spec("b"), spec("a")])

    assert error.message == "task id 'a' appears more than once; task ids must be unique"
    assert not error.too_large


def test_a_task_without_an_id_is_rejected_naming_its_position() -> None:
    error = rejection([spec("a"), spec("")])

    assert error.message == "task #1 has no id; give every task a unique id"


def test_a_dependency_on_a_task_outside_the_job_is_rejected_naming_both() -> None:
    error = rejection([spec("a"), spec("b", "a", "ghost")])

    assert error.message == "task 'b' depends on 'ghost', which is not a task of this job"
    assert not error.too_large


def test_a_task_that_depends_on_itself_is_rejected() -> None:
    error = rejection([spec("a"), spec("b", "b")])

    assert error.message == "task 'b' depends on itself; remove it from depends_on"


def test_a_dependency_cycle_is_rejected_with_a_message_naming_the_cycle() -> None:
    error = rejection([spec("a", "b"), spec("b", "c"), spec("c", "a"), spec("d")])

    assert error.message == (
        "the dependencies form a cycle: 'a' -> 'b' -> 'c' -> 'a'; remove one of these edges"
    )
    assert not error.too_large


def test_a_cycle_not_reachable_from_the_first_task_is_still_found() -> None:
    specs = [spec("root"), spec("x", "root"), spec("p", "q", "x"), spec("q", "p")]

    assert find_cycle(specs) == ["p", "q", "p"]
    assert "'p' -> 'q' -> 'p'" in rejection(specs).message


def test_a_cycle_reached_through_a_tail_names_only_the_tasks_on_the_cycle() -> None:
    specs = [spec("a", "b"), spec("b", "c"), spec("c", "d"), spec("d", "b")]

    assert find_cycle(specs) == ["b", "c", "d", "b"]
    assert rejection(specs).message == (
        "the dependencies form a cycle: 'b' -> 'c' -> 'd' -> 'b'; remove one of these edges"
    )


def test_a_negative_timeout_is_rejected() -> None:
    error = rejection([spec("a", timeout_s=-1.0)])

    assert error.message == (
        "task 'a' has a negative timeout (-1.0 s); "
        "use a positive number of seconds, or 0 for the default"
    )


@pytest.mark.parametrize(
    "bad", [spec("a", schedule_to_start_s=-0.5), spec("a", heartbeat_timeout_s=-0.5)]
)
def test_a_negative_schedule_to_start_or_heartbeat_timeout_is_rejected(bad: TaskSpec) -> None:
    error = rejection([bad])

    assert error.message == "task 'a' has a negative schedule-to-start or heartbeat timeout"


def test_a_task_without_a_handler_is_rejected() -> None:
    error = rejection([spec("a", handler="")])

    assert error.message == "task 'a' names no handler; set handler to an installed handler"


def test_a_payload_over_the_limit_is_rejected_as_too_large() -> None:
    error = rejection([spec("a"), spec("big", payload=b"x" * 1025)])

    assert error.too_large
    assert error.message.startswith(
        "task 'big' has a payload of 1025 bytes, over the limit of 1024 bytes;"
    )


def test_a_payload_exactly_at_the_limit_is_accepted() -> None:
    validate_job([spec("a", payload=b"x" * 1024)], LIMITS)


def test_a_job_with_too_many_tasks_is_rejected_as_too_large() -> None:
    error = rejection([spec(f"t{i}") for i in range(51)])

    assert error.too_large
    assert error.message.startswith("the job has 51 tasks, over the limit of 50;")


def test_a_job_with_exactly_the_maximum_number_of_tasks_is_accepted() -> None:
    validate_job([spec(f"t{i}") for i in range(50)], LIMITS)


@pytest.mark.parametrize("retries", [-2, 11, 1000])
def test_retries_outside_minus_one_to_the_limit_are_rejected(retries: int) -> None:
    error = rejection([spec("a", max_retries=retries)])

    assert error.message == (
        f"task 'a' asks for {retries} retries; use -1 for the default or 0 to 10"
    )
    assert not error.too_large


@pytest.mark.parametrize("retries", [-1, 0, 10])
def test_retries_from_minus_one_to_the_limit_are_accepted(retries: int) -> None:
    validate_job([spec("a", max_retries=retries)], LIMITS)


def test_a_five_thousand_task_chain_validates_without_recursion_errors() -> None:
    limits = Limits(max_payload_bytes=1024, max_tasks_per_job=10_000, max_retries=10)
    # Each task depends on the next one, so the depth-first search goes 5,000 deep from the
    # first root; listed the other way round, every root would be shallow.
    forward = [spec(f"t{i}", f"t{i + 1}") for i in range(4_999)] + [spec("t4999")]
    backward = [spec("t0")] + [spec(f"t{i}", f"t{i - 1}") for i in range(1, 5_000)]

    validate_job(forward, limits)
    validate_job(backward, limits)


def test_a_cycle_closing_a_five_thousand_task_chain_is_found_whole() -> None:
    limits = Limits(max_payload_bytes=1024, max_tasks_per_job=10_000, max_retries=10)
    specs = [spec(f"t{i}", f"t{(i + 1) % 5_000}") for i in range(5_000)]

    cycle = find_cycle(specs)

    assert cycle == [f"t{i}" for i in range(5_000)] + ["t0"]
    assert rejection(specs, limits).message.startswith(
        "the dependencies form a cycle: 't0' -> 't1' -> 't2'"
    )


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, 7 * 86400.0 + 1])
def test_a_schedule_to_close_that_is_negative_not_finite_or_over_7_days_is_rejected(
    bad: float,
) -> None:
    error = rejection([TaskSpec(id="a", handler="echo", schedule_to_close_s=bad)])

    assert error.message == (
        f"task 'a' has schedule_to_close_s {bad!r}; use a number of seconds from 0 (no limit) "
        "to 604800"
    )
    assert not error.too_large


@pytest.mark.parametrize("good", [0.0, 0.001, 7 * 86400.0])
def test_a_schedule_to_close_from_0_to_7_days_is_accepted(good: float) -> None:
    validate_job([TaskSpec(id="a", handler="echo", schedule_to_close_s=good)], LIMITS)


@pytest.mark.parametrize("bad", [-0.5, math.nan, -math.inf, 1e12])
def test_a_job_deadline_that_is_negative_not_finite_or_over_7_days_is_rejected(
    bad: float,
) -> None:
    with pytest.raises(JobRejected) as caught:
        validate_job([spec("a")], LIMITS, deadline_s=bad)

    assert caught.value.message == (
        f"the job's deadline_s is {bad!r}; use a number of seconds from 0 (no deadline) to 604800"
    )


@pytest.mark.parametrize(
    "field",
    ["timeout_s", "schedule_to_start_s", "heartbeat_timeout_s", "est_tokens", "est_duration_s"],
)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_number_that_is_not_finite_is_rejected_naming_its_field(field: str, bad: float) -> None:
    spec = TaskSpec(id="a", handler="echo")
    setattr(spec, field, bad)
    error = rejection([spec])

    assert error.message == f"task 'a' has {field} {bad!r}; use a finite number"
