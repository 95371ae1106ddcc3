"""Scheduler + decomposer: a task whose handler declares items is split into parts that run as
tasks of their own, merged back in item order into the one result the client sees; a part's
failure fails fast or is reported per item; a bad payload fails the task with a SPLIT_ERROR.
Fake clock."""

from __future__ import annotations

import json
from typing import cast

from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.model import (
    ErrorKind,
    HandlerTraits,
    SplitPolicy,
    Task,
    TaskError,
    TaskSpec,
    TaskState,
)
from deerflow_controller.core.scheduler import AttemptResult, Scheduler
from deerflow_controller.decomposer import Merger, Splitter

from .scheduling import JOB, assert_event_log_sound, make, trail

TRAITS = {"hash": HandlerTraits(kind="cpu", items_field="items", default_duration_s=1.0)}


def with_hash_agent() -> Scheduler:
    """The shared scheduler with agent "a" (4 slots) running the splittable handler "hash"."""
    sched = make(seed=1)
    sched.agent_joined("a", ["hash"], 4, 0.0, traits=TRAITS)
    return sched


def payload(n: int) -> bytes:
    return json.dumps({"items": list(range(n)), "salt": "x"}).encode()


def answer(task: Task) -> bytes:
    items = json.loads(task.spec.payload)["items"]
    return json.dumps({"results": [i * 10 for i in items]}).encode()


def test_a_task_with_items_is_split_into_chunks_and_merged_in_item_order() -> None:
    sched = with_hash_agent()
    job = sched.submit(JOB, "j", [TaskSpec("t", "hash", payload=payload(8))], 0.0)
    parts = sched.take().assignments["a"]
    assert len(parts) == 4
    assert [json.loads(p.spec.payload)["items"] for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert all(json.loads(p.spec.payload)["salt"] == "x" for p in parts)
    assert sched.counters.split_tasks == 1
    running = job.events[-1]
    assert running.state == TaskState.RUNNING and running.detail.startswith("split 8 items")
    # Parts finish out of order; the parent's result is still in item order.
    for p in reversed(parts):
        sched.finished("a", [AttemptResult(p.key, True, answer(p), run_s=2.0)], 1.0)
    task = job.tasks["t"]
    assert task.state == TaskState.SUCCEEDED
    assert json.loads(task.output)["results"] == [i * 10 for i in range(8)]
    # The client sees only its own task: no part ids in the event log.
    assert {e.task_id for e in job.events} == {"t"}
    assert trail(job, "t") == [TaskState.RUNNING, TaskState.SUCCEEDED]
    assert_event_log_sound(job)


def test_a_failed_part_fails_the_parent_fast_and_stops_the_others() -> None:
    sched = with_hash_agent()
    job = sched.submit(JOB, "j", [TaskSpec("t", "hash", payload=payload(8), max_retries=0)], 0.0)
    parts = sched.take().assignments["a"]
    boom = TaskError(ErrorKind.HANDLER_ERROR, "item 3 is cursed", False)
    sched.finished("a", [AttemptResult(parts[1].key, False, error=boom)], 1.0)
    task = job.tasks["t"]
    assert task.state == TaskState.FAILED
    assert task.error is not None and "item 3 is cursed" in task.error.message
    assert sorted(k[1] for k in sched.take().cancels["a"]) == sorted(
        p.id for p in parts if p is not parts[1]
    )
    assert_event_log_sound(job)


def test_partial_results_report_each_failed_item() -> None:
    sched = with_hash_agent()
    spec = TaskSpec("t", "hash", payload=payload(8), max_retries=0, partial_results=True)
    job = sched.submit(JOB, "j", [spec], 0.0)
    parts = sched.take().assignments["a"]
    boom = TaskError(ErrorKind.HANDLER_ERROR, "provider refused", False)
    results = [
        AttemptResult(p.key, False, error=boom) if i == 2 else AttemptResult(p.key, True, answer(p))
        for i, p in enumerate(parts)
    ]
    sched.finished("a", results, 1.0)
    task = job.tasks["t"]
    assert task.state == TaskState.SUCCEEDED
    out = json.loads(task.output)
    assert out["results"][:4] == [0, 10, 20, 30] and out["results"][4:6] == [None, None]
    assert [e["index"] for e in out["errors"]] == [4, 5]
    assert_event_log_sound(job)


def test_a_payload_the_splitter_cannot_parse_fails_with_a_split_error_naming_the_handler() -> None:
    sched = with_hash_agent()
    job = sched.submit(
        JOB,
        "j",
        [TaskSpec("bad", "hash", payload=b"not json"), TaskSpec("ok", "hash", payload=payload(1))],
        0.0,
    )
    bad = job.tasks["bad"]
    assert bad.state == TaskState.FAILED
    assert bad.error is not None and bad.error.kind == ErrorKind.SPLIT_ERROR
    assert "'hash'" in bad.error.message and "split" in bad.error.message
    # Nothing else stalls: the other task runs whole (one item is not worth splitting).
    assert [t.id for t in sched.take().assignments["a"]] == ["ok"]
    assert_event_log_sound(job)


def test_split_never_runs_the_task_whole() -> None:
    sched = with_hash_agent()
    spec = TaskSpec("t", "hash", payload=payload(8), split=SplitPolicy.NEVER)
    sched.submit(JOB, "j", [spec], 0.0)
    assert [t.id for t in sched.take().assignments["a"]] == ["t"]


def test_cancelling_a_split_task_cancels_its_running_parts() -> None:
    sched = with_hash_agent()
    job = sched.submit(JOB, "j", [TaskSpec("t", "hash", payload=payload(8))], 0.0)
    parts = sched.take().assignments["a"]
    assert sched.cancel(JOB, None, "enough", 1.0) == 1
    assert job.tasks["t"].state == TaskState.CANCELLED
    assert sorted(k[1] for k in sched.take().cancels["a"]) == sorted(p.id for p in parts)
    assert_event_log_sound(job)


def stages(payload: bytes) -> list[object]:
    """A custom splitter: fetch, then parse, then summarise, each stage after the previous."""

    class Stage:
        def __init__(self, name: str, after: tuple[int, ...]) -> None:
            self.payload = json.dumps({"stage": name}).encode()
            self.depends_on = after

    return [Stage("fetch", ()), Stage("parse", (0,)), Stage("summarise", (1,))]


def join(outputs: list[bytes | None]) -> bytes:
    return b"|".join(o or b"-" for o in outputs)


def broken_merger(outputs: list[bytes | None]) -> bytes:
    raise RuntimeError("merger bug")


def pipeline_scheduler(merger: object) -> Scheduler:
    base = SchedulerConfig(prefetch=0, prefetch_fraction=0.0, agent_silence_s=1e9)
    sched = Scheduler(
        base,
        seed=1,
        split_functions=lambda h: (
            (cast(Splitter, stages), cast(Merger, merger)) if h == "research" else (None, None)
        ),
    )
    traits = {"research": HandlerTraits(kind="io", default_duration_s=1.0)}
    sched.agent_joined("a", ["research"], 4, 0.0, traits=traits)
    return sched


def test_a_custom_splitter_makes_a_pipeline_whose_stages_run_one_after_another() -> None:
    sched = pipeline_scheduler(join)
    job = sched.submit(JOB, "j", [TaskSpec("r", "research", payload=b"{}")], 0.0)
    outputs = []
    for stage in ("fetch", "parse", "summarise"):
        (part,) = sched.take().assignments["a"]
        assert json.loads(part.spec.payload) == {"stage": stage}
        outputs.append(stage.encode())
        sched.finished("a", [AttemptResult(part.key, True, stage.encode())], 1.0)
    assert job.tasks["r"].state == TaskState.SUCCEEDED
    assert job.tasks["r"].output == b"fetch|parse|summarise"
    assert_event_log_sound(job)


def test_a_merger_that_raises_fails_the_task_with_a_split_error_naming_it() -> None:
    sched = pipeline_scheduler(broken_merger)
    job = sched.submit(JOB, "j", [TaskSpec("r", "research", payload=b"{}")], 0.0)
    for _ in range(3):
        (part,) = sched.take().assignments["a"]
        sched.finished("a", [AttemptResult(part.key, True, b"x")], 1.0)
    task = job.tasks["r"]
    assert task.state == TaskState.FAILED
    assert task.error is not None and task.error.kind == ErrorKind.SPLIT_ERROR
    assert "'research' merger" in task.error.message and "merger bug" in task.error.message
    assert_event_log_sound(job)
