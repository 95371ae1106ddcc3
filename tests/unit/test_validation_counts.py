"""Counts are bounded as sizes are: labels, rate keys, depends_on entries and trace-context
entries of a task or job, and the ids a CancelJob names (issue #17, finding 5)."""

from __future__ import annotations

import pytest

from deerflow_controller.core.model import TaskSpec
from deerflow_controller.core.validation import (
    MAX_CANCEL_IDS,
    MAX_LABELS,
    MAX_RATE_KEYS,
    MAX_TRACE_CONTEXT_ENTRIES,
    MAX_TRACE_VALUE_BYTES,
    JobRejected,
    Limits,
    cancel_count_problem,
    unknown_ids_problem,
    validate_job,
)

LIMITS = Limits(max_payload_bytes=1024, max_tasks_per_job=5000, max_retries=10)


def refusal(specs: list[TaskSpec], trace_context: dict[str, str] | None = None) -> str:
    with pytest.raises(JobRejected) as caught:
        validate_job(specs, LIMITS, trace_context=trace_context)
    assert not caught.value.too_large
    return caught.value.message


def test_labels_up_to_the_limit_pass_and_one_more_is_refused_naming_the_limit() -> None:
    labels = {f"k{i}": "v" for i in range(MAX_LABELS)}
    validate_job([TaskSpec("a", "echo", labels=labels)], LIMITS)
    labels["one-more"] = "v"
    message = refusal([TaskSpec("a", "echo", labels=labels)])
    assert message == f"task 'a' has {MAX_LABELS + 1} labels, over the limit of 64; send fewer"


def test_a_task_drawing_on_more_rate_keys_than_the_limit_is_refused() -> None:
    keys = tuple(f"llm/k{i}" for i in range(MAX_RATE_KEYS))
    validate_job([TaskSpec("a", "echo", rate_keys=keys)], LIMITS)
    message = refusal([TaskSpec("a", "echo", rate_keys=(*keys, "llm/extra"))])
    assert f"17 rate keys, over the limit of {MAX_RATE_KEYS}" in message


def test_a_million_repeated_depends_on_entries_are_refused_in_one_sentence() -> None:
    specs = [TaskSpec("a", "echo"), TaskSpec("b", "echo", depends_on=("a",) * 1_000_000)]
    message = refusal(specs)
    assert message == (
        "task 'b' has 1000000 depends_on entries, more than the job has tasks (2); "
        "name each dependency once"
    )


def test_every_other_task_of_the_job_may_be_a_dependency() -> None:
    others = tuple(f"t{i}" for i in range(100))
    validate_job(
        [*(TaskSpec(t, "echo") for t in others), TaskSpec("z", "echo", depends_on=others)], LIMITS
    )


def test_a_task_trace_context_with_too_many_entries_is_refused() -> None:
    tc = {f"k{i}": "v" for i in range(MAX_TRACE_CONTEXT_ENTRIES + 1)}
    message = refusal([TaskSpec("a", "echo", trace_context=tc)])
    assert message == "task 'a': trace_context has 17 entries, over the limit of 16; send fewer"


def test_a_job_trace_context_with_too_many_entries_is_refused_even_if_no_task_uses_it() -> None:
    tc = {f"k{i}": "v" for i in range(100_000)}
    own = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    message = refusal([TaskSpec("a", "echo", trace_context=own)], trace_context=tc)
    assert message == "the job's trace_context has 100000 entries, over the limit of 16; send fewer"


def test_a_trace_context_value_over_512_bytes_is_refused_citing_a_prefix() -> None:
    ok = {"tracestate": "x" * MAX_TRACE_VALUE_BYTES}
    validate_job([TaskSpec("a", "echo", trace_context=ok)], LIMITS, trace_context=ok)
    message = refusal([TaskSpec("a", "echo", trace_context={"tracestate": "x" * 1_000_000})])
    assert "trace_context value of 'tracestate'" in message
    assert "1000000 bytes, over the limit of 512" in message and len(message) < 300


def test_a_task_sharing_the_job_trace_context_is_not_checked_twice() -> None:
    tc = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    validate_job(
        [TaskSpec(f"t{i}", "echo", trace_context=tc) for i in range(10)], LIMITS, trace_context=tc
    )


def test_a_cancel_naming_more_ids_than_the_job_has_tasks_is_refused() -> None:
    assert cancel_count_problem(3, 3) is None
    problem = cancel_count_problem(1_000_000, 3)
    assert problem is not None
    assert problem.startswith("the CancelJob names 1000000 task ids, over the limit of 3")
    assert "nothing was cancelled" in problem


def test_a_cancel_is_capped_at_max_cancel_ids_whatever_the_job_size() -> None:
    assert cancel_count_problem(MAX_CANCEL_IDS, 10 * MAX_CANCEL_IDS) is None
    problem = cancel_count_problem(MAX_CANCEL_IDS + 1, 10 * MAX_CANCEL_IDS)
    assert problem is not None and f"over the limit of {MAX_CANCEL_IDS}" in problem


def test_unknown_cancel_ids_are_named_a_few_and_counted() -> None:
    known = {"a": 1, "b": 2}
    assert unknown_ids_problem(["a", "b"], known, "j") is None
    assert unknown_ids_problem(["a", "x"], known, "j") == (
        "job 'j' has no task 'x'; nothing was cancelled"
    )
    problem = unknown_ids_problem(["y" * 10_000, "p", "q", "r", "s"], known, "j")
    assert problem is not None and problem.endswith("'q' and 2 more; nothing was cancelled")
    assert len(problem) < 200
