"""Results flow along dependencies (issue #15), in the core with a fake clock: an output is kept
for exactly as long as a dependent that asked for it has not ended, within a per-task limit and
a per-job budget; every path that ends a task successfully (a run, the cache, in-flight dedup, a
split task's merge, a restore) keeps it alike; each attempt's assignment carries the inputs in
depends_on order, inline or by reference."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest

from deerflow_controller.cache import ResultCache
from deerflow_controller.core.inputs import fetchable_input, wanted_inputs
from deerflow_controller.core.model import ErrorKind, HandlerTraits, Task, TaskSpec, TaskState
from deerflow_controller.core.scheduler import AttemptResult, RestoredJob, RestoredResult, Scheduler
from deerflow_controller.core.validation import JobRejected, Limits, validate_job
from deerflow_controller.service import wire
from deerflow_controller.service.inputs import InputPacker, hash_for_readers, input_chunks
from deerflow_protos import agent_pb2

from .scheduling import JOB, assert_event_log_sound, fail, key, make, ok, spec


def reads(
    task_id: str, *depends_on: str, inputs: tuple[str, ...] | None = None, **kw: Any
) -> TaskSpec:
    """A task that depends on ``depends_on`` and reads ``inputs`` of them (all when None)."""
    base = spec(task_id, *depends_on)
    if inputs is None:
        return replace(base, inputs_all=True, **kw)
    return replace(base, inputs=inputs, **kw)


def started(s: Scheduler, agent: str = "a") -> dict[str, Task]:
    return {t.id: t for t in s.take().assignments.get(agent, [])}


def assignment_inputs(task: Task, inline_bytes: int = 1 << 20) -> list[agent_pb2.TaskInput]:
    msg = wire.assignment_batch(1, [task], None, InputPacker(inline_bytes, 8 << 20))
    return list(msg.assignments.assignments[0].inputs)


def test_an_output_is_kept_until_the_last_dependent_that_reads_it_ends() -> None:
    s = make()
    s.agent_joined("a", ["echo"], 8, 0.0)
    job = s.submit(JOB, "", [spec("p"), reads("b", "p"), reads("c", "p"), spec("d", "p")], 0.0)
    p = job.tasks["p"]
    assert p.consumers == 2  # d depends on p but reads nothing
    s.finished("a", [ok("p", 1, b"12345")], 1.0)
    assert p.retained and job.retained_bytes == 5
    s.finished("a", [ok("b", 1)], 2.0)
    assert p.retained and job.retained_bytes == 5
    s.finished("a", [fail("c", 1, retryable=False)], 3.0)  # ending badly gives it back too
    assert not p.retained and job.retained_bytes == 0
    assert p.output == b"12345"  # still the client's, in the event log, until the job expires
    assert_event_log_sound(job)


def test_a_task_whose_dependents_read_nothing_keeps_nothing_and_has_no_bound() -> None:
    s = make(max_retained_output_bytes=3)
    s.agent_joined("a", ["echo"], 8, 0.0)
    job = s.submit(JOB, "", [spec("p"), spec("b", "p")], 0.0)
    s.finished("a", [ok("p", 1, b"longer than three")], 1.0)
    assert job.tasks["p"].state == TaskState.SUCCEEDED
    assert not job.tasks["p"].retained and job.retained_bytes == 0


def test_an_output_over_the_per_task_limit_fails_its_task_resource_exhausted() -> None:
    s = make(max_retained_output_bytes=4)
    s.agent_joined("a", ["echo"], 8, 0.0)
    job = s.submit(JOB, "", [spec("p"), reads("b", "p")], 0.0)
    s.finished("a", [ok("p", 1, b"12345")], 1.0)
    p, b = job.tasks["p"], job.tasks["b"]
    assert p.state == TaskState.FAILED and p.error is not None
    assert p.error.kind == ErrorKind.RESOURCE_EXHAUSTED and not p.error.retryable
    assert p.error.message.startswith("task 'p' produced 5 bytes")
    assert "--max-retained-output-bytes" in p.error.message and "\n" not in p.error.message
    assert b.state == TaskState.FAILED and b.error is not None
    assert b.error.kind == ErrorKind.DEPENDENCY_FAILED
    assert job.events[-1].state == TaskState.FAILED  # no SUCCEEDED event went out first
    assert job.retained_bytes == 0
    assert_event_log_sound(job)


def test_the_output_that_would_go_over_the_job_budget_fails_resource_exhausted() -> None:
    s = make(max_retained_job_bytes=8)
    s.agent_joined("a", ["echo"], 8, 0.0)
    job = s.submit(JOB, "", [spec("p1"), spec("p2"), reads("c", "p1", "p2")], 0.0)
    s.finished("a", [ok("p1", 1, b"12345")], 1.0)
    s.finished("a", [ok("p2", 1, b"6789")], 2.0)
    p2 = job.tasks["p2"]
    assert job.tasks["p1"].state == TaskState.SUCCEEDED
    assert p2.state == TaskState.FAILED and p2.error is not None
    assert p2.error.kind == ErrorKind.RESOURCE_EXHAUSTED
    assert "job 'j'" in p2.error.message and "--max-retained-job-bytes" in p2.error.message
    assert job.tasks["c"].state == TaskState.FAILED
    assert job.retained_bytes == 0  # c ended, so p1's hold went back


def test_a_budget_freed_by_a_finished_dependent_takes_the_next_output() -> None:
    s = make(max_retained_job_bytes=5)
    s.agent_joined("a", ["echo"], 8, 0.0)
    job = s.submit(
        JOB, "", [spec("p1"), reads("c1", "p1"), spec("p2", "c1"), reads("c2", "p2")], 0.0
    )
    s.finished("a", [ok("p1", 1, b"12345")], 1.0)
    s.finished("a", [ok("c1", 1)], 2.0)
    s.finished("a", [ok("p2", 1, b"abcde")], 3.0)
    assert job.tasks["p2"].state == TaskState.SUCCEEDED and job.retained_bytes == 5


def test_assignments_carry_inputs_in_depends_on_order_whatever_order_they_are_named() -> None:
    s = make()
    s.agent_joined("a", ["echo"], 8, 0.0)
    specs = [
        spec("x"),
        spec("y"),
        spec("z"),
        reads("named", "z", "x", "y", inputs=("y", "z")),
        reads("all", "y", "x"),
        spec("none", "x"),
    ]
    s.submit(JOB, "", specs, 0.0)
    s.take()
    s.finished("a", [ok("x", 1, b"X"), ok("y", 1, b"Y"), ok("z", 1, b"Z")], 1.0)
    ready = started(s)
    named = assignment_inputs(ready["named"])
    assert [(i.task_id, i.data) for i in named] == [("z", b"Z"), ("y", b"Y")]
    assert [i.task_id for i in assignment_inputs(ready["all"])] == ["y", "x"]
    assert assignment_inputs(ready["none"]) == []


def test_a_large_input_travels_by_reference_with_its_size_and_digest() -> None:
    s = make()
    s.agent_joined("a", ["echo"], 8, 0.0)
    job = s.submit(JOB, "", [spec("small"), spec("big"), reads("c", "small", "big")], 0.0)
    s.take()
    big = bytes(range(256)) * 40
    s.finished("a", [ok("small", 1, b"s"), ok("big", 1, big)], 1.0)
    c = started(s)["c"]
    small_in, big_in = assignment_inputs(c, inline_bytes=1000)
    assert small_in.data == b"s" and not small_in.reference
    assert big_in.reference and big_in.data == b"" and big_in.size == len(big)
    assert big_in.sha256 == hashlib.sha256(big).hexdigest()
    chunks = input_chunks(job, "c", c.attempt, "big", 0)
    assert not isinstance(chunks, str) and b"".join(chunks) == big


def test_a_batch_carries_little_inline_and_sends_the_rest_by_reference() -> None:
    s = make()
    s.agent_joined("a", ["echo"], 8, 0.0)
    s.submit(JOB, "", [spec("p"), *(reads(f"c{i}", "p") for i in range(4))], 0.0)
    s.take()
    s.finished("a", [ok("p", 1, b"x" * 100)], 1.0)
    tasks = list(started(s).values())
    msg = wire.assignment_batch(1, tasks, None, InputPacker(1000, 250))
    refs = [a.inputs[0].reference for a in msg.assignments.assignments]
    assert refs == [False, False, True, True]


def test_a_retried_dependent_gets_its_inputs_again_and_they_stay_fetchable() -> None:
    s = make()
    s.agent_joined("a", ["echo"], 8, 0.0)
    job = s.submit(JOB, "", [spec("p"), reads("c", "p")], 0.0)
    s.take()
    s.finished("a", [ok("p", 1, b"data")], 1.0)
    started(s)
    s.finished("a", [fail("c", 1)], 2.0)
    s.tick(60.0)
    c = started(s)["c"]
    assert c.attempt == 2
    assert [i.data for i in assignment_inputs(c)] == [b"data"]
    assert fetchable_input(job, "c", 2, "p") == b"data"
    assert "not current" in str(fetchable_input(job, "c", 1, "p"))
    s.finished("a", [ok("c", 2)], 61.0)
    assert "not current" in str(fetchable_input(job, "c", 2, "p"))
    assert job.retained_bytes == 0


def test_only_a_task_that_asked_may_fetch_an_input() -> None:
    s = make()
    s.agent_joined("a", ["echo"], 8, 0.0)
    job = s.submit(JOB, "", [spec("p"), spec("q"), reads("c", "p", "q", inputs=("q",))], 0.0)
    s.take()
    s.finished("a", [ok("p", 1, b"P"), ok("q", 1, b"Q")], 1.0)
    started(s)
    assert "did not ask for the output of 'p'" in str(fetchable_input(job, "c", 1, "p"))
    assert fetchable_input(job, "c", 1, "q") == b"Q"
    assert "no task 'zz'" in str(fetchable_input(job, "zz", 1, "q"))


CACHED = {"search": HandlerTraits(cacheable=True), "echo": HandlerTraits()}


def test_a_cache_hit_and_a_deduplicated_follower_hand_their_outputs_on() -> None:
    s = make(cache=ResultCache())
    s.agent_joined("a", ["search", "echo"], 8, 0.0, traits=CACHED)
    q = b'{"query": "q"}'
    first = s.submit("j1", "", [TaskSpec("s", "search", payload=q)], 0.0)
    s.take()
    # An identical request in flight: j2's s waits for j1's and shares its result.
    j2 = s.submit("j2", "", [TaskSpec("s", "search", payload=q), reads("c", "s")], 0.5)
    assert s.take().assignments == {}
    s.finished("a", [AttemptResult(key("s", 1, "j1"), True, b"hits", run_s=1.0)], 1.0)
    assert j2.tasks["s"].retained and first.retained_bytes == 0
    assert [i.data for i in assignment_inputs(started(s)["c"])] == [b"hits"]
    # Later the cache answers it outright.
    j3 = s.submit("j3", "", [TaskSpec("s", "search", payload=q), reads("c", "s")], 5.0)
    [hit] = [e for e in j3.events if e.task_id == "s" and e.state == TaskState.SUCCEEDED]
    assert hit.cache_layer == "exact"
    assert [i.data for i in assignment_inputs(started(s)["c"])] == [b"hits"]


def test_a_task_that_reads_inputs_is_never_answered_from_the_cache() -> None:
    s = make(cache=ResultCache())
    s.agent_joined("a", ["search", "echo"], 8, 0.0, traits=CACHED)
    for n, job_id in enumerate(("j1", "j2")):
        payload = json.dumps({"p": n}).encode()
        specs = [
            TaskSpec("p", "echo", payload=payload),
            TaskSpec("r", "search", b"{}", depends_on=("p",), inputs=("p",)),
        ]
        s.submit(job_id, "", specs, float(n))
        s.take()
        s.finished("a", [AttemptResult(key("p", 1, job_id), True, payload, run_s=1.0)], n + 0.5)
        assert list(started(s)) == ["r"]  # it runs: its answer depends on p's output
        s.finished("a", [AttemptResult(key("r", 1, job_id), True, b"out", run_s=1.0)], n + 0.7)


SPLIT = {
    "hash": HandlerTraits(kind="cpu", items_field="items", default_duration_s=1.0),
    "echo": HandlerTraits(),
}


def test_the_parts_of_a_split_task_get_its_inputs_and_its_dependents_the_merge() -> None:
    s = make(seed=1)
    s.agent_joined("a", ["hash", "echo"], 4, 0.0, traits=SPLIT)
    items = json.dumps({"items": list(range(8))}).encode()
    specs = [
        spec("p"),
        replace(reads("big", "p"), handler="hash", payload=items),
        reads("after", "big"),
    ]
    job = s.submit(JOB, "", specs, 0.0)
    s.take()
    s.finished("a", [ok("p", 1, b"P")], 1.0)
    parts = list(started(s).values())
    assert len(parts) > 1 and all(t.parent is not None for t in parts)
    assert all([i.data for i in assignment_inputs(t)] == [b"P"] for t in parts)
    assert fetchable_input(job, parts[0].id, 1, "p") == b"P"
    for t in parts:
        out = json.dumps({"results": json.loads(t.spec.payload)["items"]}).encode()
        s.finished("a", [AttemptResult(t.key, True, out, run_s=1.0)], 2.0)
    big = job.tasks["big"]
    assert big.state == TaskState.SUCCEEDED and big.retained
    assert [i.data for i in assignment_inputs(started(s)["after"])] == [big.output]
    assert not job.tasks["p"].retained  # big, its one reader, ended


def test_a_restored_output_goes_to_the_dependents_still_to_run() -> None:
    s = make()
    job = s.restore_job(
        RestoredJob(
            JOB,
            "",
            [spec("p"), spec("q"), reads("done", "p"), reads("c", "p", "q")],
            {
                "p": RestoredResult(TaskState.SUCCEEDED, b"P", attempt=1),
                "q": RestoredResult(TaskState.SUCCEEDED, b"QQ", attempt=1),
                "done": RestoredResult(TaskState.SUCCEEDED, b"", attempt=1),
            },
        ),
        5.0,
    )
    assert job.tasks["p"].consumers == 1 and job.retained_bytes == 3
    s.agent_joined("a", ["echo"], 4, 5.0)
    s.release_restored(6.0)
    assert [i.data for i in assignment_inputs(started(s)["c"])] == [b"P", b"QQ"]


def test_cancelling_a_reader_gives_its_hold_back() -> None:
    s = make()
    s.agent_joined("a", ["echo"], 8, 0.0)
    job = s.submit(JOB, "", [spec("p"), spec("slow"), reads("c", "p", "slow")], 0.0)
    s.finished("a", [ok("p", 1, b"abc")], 1.0)
    assert job.retained_bytes == 3
    s.cancel(JOB, ["c"], "", 2.0)
    assert job.retained_bytes == 0


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            [spec("a"), reads("b", "a", inputs=("x",))],
            "task 'b' asks for the output of 'x', which is not in its depends_on; add it there "
            "or remove it from inputs",
        ),
        ([spec("a"), reads("b", "a", inputs=("a", "a"))], "task 'b' names input 'a' twice"),
        (
            [spec("a"), replace(reads("b", "a", inputs=("a",)), inputs_all=True)],
            "task 'b' asks for all its inputs and names some too",
        ),
    ],
)
def test_inputs_that_are_not_dependencies_are_refused_in_one_sentence(
    specs: list[TaskSpec], message: str
) -> None:
    with pytest.raises(JobRejected) as refused:
        validate_job(specs, Limits(1 << 20, 1000, 10))
    assert refused.value.message.startswith(message)
    assert "\n" not in refused.value.message


def test_wanted_inputs_follow_depends_on_and_name_each_once() -> None:
    assert wanted_inputs(reads("c", "b", "a", "b")) == ("b", "a")
    assert wanted_inputs(reads("c", "b", "a", inputs=("a", "b"))) == ("b", "a")
    assert wanted_inputs(spec("c", "a")) == ()


def test_a_reference_names_the_digest_of_this_output_not_of_an_earlier_one_of_the_same_id() -> None:
    """A new leader (or a reused job id) may hold another output of the same size under the
    same ids: the packer, which outlives schedulers, must not hand out the old digest."""
    packer = InputPacker(10, 1 << 20)
    digests = []
    for body in (b"a" * 100, b"b" * 100):
        s = make()
        s.agent_joined("a", ["echo"], 8, 0.0)
        s.submit(JOB, "", [spec("p"), reads("c", "p")], 0.0)
        s.take()
        s.finished("a", [ok("p", 1, body)], 1.0)
        msg = wire.assignment_batch(1, list(started(s).values()), None, packer)
        digests.append(msg.assignments.assignments[0].inputs[0].sha256)
    assert digests == [
        hashlib.sha256(b"a" * 100).hexdigest(),
        hashlib.sha256(b"b" * 100).hexdigest(),
    ]


async def test_the_shell_hashes_large_outputs_with_readers_before_the_core_takes_them() -> None:
    s = make()
    s.agent_joined("a", ["echo"], 8, 0.0)
    job = s.submit(JOB, "", [spec("p"), reads("c", "p"), spec("q")], 0.0)
    s.take()
    big = b"z" * 5000
    results = [ok("p", 1, big), ok("q", 1, big)]
    await hash_for_readers(results, s.jobs.get, 1000)
    assert [r.output_sha256 for r in results] == [hashlib.sha256(big).hexdigest(), ""]
    s.finished("a", results, 1.0)
    assert job.tasks["p"].output_sha256 == hashlib.sha256(big).hexdigest()
    c = started(s)["c"]
    assert assignment_inputs(c, inline_bytes=1000)[0].sha256 == job.tasks["p"].output_sha256
