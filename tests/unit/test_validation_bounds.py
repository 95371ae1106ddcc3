"""Names are bounded and printable, priorities in range, and a refusal cites only a bounded
prefix of what was sent (issue #17, findings 5 and 6)."""

from __future__ import annotations

import pytest

from deerflow_controller.core.model import TaskSpec
from deerflow_controller.core.validation import (
    MAX_NAME_BYTES,
    MAX_PRIORITY,
    JobRejected,
    Limits,
    name_problem,
    quote,
    validate_job,
)

LIMITS = Limits(max_payload_bytes=1024, max_tasks_per_job=5000, max_retries=10)


def refusal(specs: list[TaskSpec], job_id: str = "", name: str = "") -> str:
    with pytest.raises(JobRejected) as caught:
        validate_job(specs, LIMITS, job_id=job_id, name=name)
    return caught.value.message


def test_quote_keeps_a_short_value_whole_and_cuts_a_long_one_saying_how_much_was_left() -> None:
    assert quote("a'b") == repr("a'b")
    long = quote("x" * 1_000_000)
    assert long == repr("x" * 64) + "... (999936 more characters)"


def test_a_name_is_measured_in_utf8_bytes_not_characters() -> None:
    assert name_problem("é" * (MAX_NAME_BYTES // 2), "id") is None
    problem = name_problem("é" * (MAX_NAME_BYTES // 2 + 1), "id")
    assert problem is not None and f"{MAX_NAME_BYTES + 2} bytes" in problem


@pytest.mark.parametrize("bad", ["tab\there", "nul\x00", "del\x7f", "zero\u200bwidth", "ls\u2028"])
def test_a_name_with_an_unprintable_character_is_refused_naming_where(bad: str) -> None:
    problem = name_problem(bad, "tenant")
    assert problem is not None and "tenant" in problem and "unprintable character" in problem


def test_spaces_and_non_ascii_letters_are_printable_names() -> None:
    assert name_problem("research step 3 — 東京", "id") is None


def test_a_long_cycle_names_a_few_tasks_and_counts_the_rest() -> None:
    n = 3000
    specs = [TaskSpec(f"t{i}", "echo", depends_on=(f"t{(i + 1) % n}",)) for i in range(n)]
    message = refusal(specs)
    assert message == (
        "the dependencies form a cycle: 't0' -> 't1' -> 't2' -> 't3' -> ... (3000 tasks in "
        "all, back to 't0'); remove one of its edges"
    )


def test_every_echo_of_a_huge_value_is_bounded() -> None:
    huge = "z" * 100_000
    cases = [
        [TaskSpec("a", "echo", depends_on=(huge,))],
        [TaskSpec("a", "echo", depends_on=("b",), inputs=(huge,)), TaskSpec("b", "echo")],
        [TaskSpec("a", "echo", labels={huge: "v"})],
        [TaskSpec(huge, "echo")],
    ]
    for specs in cases:
        assert len(refusal(specs)) < 300


@pytest.mark.parametrize("priority", [MAX_PRIORITY + 1, -MAX_PRIORITY - 1, 2**31 - 1, -(2**31)])
def test_a_priority_out_of_range_is_refused(priority: int) -> None:
    message = refusal([TaskSpec("a", "echo", priority=priority)])
    assert f"task 'a' has priority {priority}; use -1000000 to 1000000" in message


def test_priorities_at_the_ends_of_the_range_are_accepted() -> None:
    validate_job(
        [
            TaskSpec("hi", "echo", priority=MAX_PRIORITY),
            TaskSpec("lo", "echo", priority=-MAX_PRIORITY),
        ],
        LIMITS,
    )


def test_a_job_id_or_name_over_its_limit_is_refused_before_the_tasks_are_read() -> None:
    assert refusal([], job_id="j" * 257).startswith("job id 'jjj")
    assert refusal([], name="n" * 1025).startswith("job name 'nnn")
    assert refusal([], job_id="a\nb").startswith("job id 'a\\nb' has an unprintable")


def test_the_sdk_names_the_task_and_the_range_for_a_priority_the_wire_cannot_carry() -> None:
    from deerflow_controller.client import Task

    with pytest.raises(ValueError, match=r"task 'a': priority 1099511627776 does not fit"):
        Task("a", "echo", priority=2**40).to_proto()
