"""ReadyQueue: per-handler priority heaps, FIFO among equals, lazily discarded entries."""

from __future__ import annotations

from deerflow_controller.model import Job, Task, TaskSpec, TaskState
from deerflow_controller.ready_queue import ReadyQueue

JOB = Job(id="j", name="", submitted_at=0.0)


def task(task_id: str, handler: str = "echo", priority: int = 0) -> Task:
    return Task(
        job=JOB,
        spec=TaskSpec(id=task_id, handler=handler, priority=priority),
        timeout_s=10.0,
        max_retries=0,
    )


def pop_all(queue: ReadyQueue, handlers: tuple[str, ...] = ("echo",)) -> list[str]:
    out = []
    while (popped := queue.pop_for(handlers)) is not None:
        out.append(popped.id)
    return out


def test_push_marks_a_task_queued_with_the_time_it_became_ready() -> None:
    queue = ReadyQueue()
    t = task("a")

    queue.push(t, 12.5)

    assert t.state == TaskState.QUEUED
    assert t.ready_at == 12.5
    assert t.ready_seq > 0
    assert len(queue) == 1


def test_the_highest_priority_task_is_popped_first() -> None:
    queue = ReadyQueue()
    for name, priority in [("low", -1), ("high", 9), ("mid", 3), ("zero", 0)]:
        queue.push(task(name, priority=priority), 0.0)

    assert pop_all(queue) == ["high", "mid", "zero", "low"]
    assert len(queue) == 0


def test_tasks_of_equal_priority_come_out_in_the_order_they_were_pushed() -> None:
    queue = ReadyQueue()
    for name in ["c", "a", "d", "b"]:
        queue.push(task(name, priority=1), 0.0)
    queue.push(task("first", priority=2), 0.0)

    assert pop_all(queue) == ["first", "c", "a", "d", "b"]


def test_pop_for_only_returns_tasks_of_the_given_handlers() -> None:
    queue = ReadyQueue()
    queue.push(task("s1", "search", priority=5), 0.0)
    queue.push(task("e1", "echo"), 0.0)
    queue.push(task("c1", "crawl", priority=9), 0.0)

    assert pop_all(queue, ("echo",)) == ["e1"]
    assert pop_all(queue, ("search", "llm")) == ["s1"]
    assert len(queue) == 1
    assert queue.handlers_waiting() == ["crawl"]


def test_pop_for_picks_the_best_head_across_several_handlers() -> None:
    queue = ReadyQueue()
    queue.push(task("e1", "echo"), 0.0)
    queue.push(task("s1", "search"), 0.0)
    queue.push(task("e2", "echo"), 0.0)
    queue.push(task("s2", "search", priority=1), 0.0)

    assert pop_all(queue, ("echo", "search")) == ["s2", "e1", "s1", "e2"]


def test_pop_for_an_unknown_or_empty_handler_returns_none() -> None:
    queue = ReadyQueue()
    queue.push(task("a"), 0.0)
    assert queue.pop_for(["echo"]) is not None

    assert queue.pop_for(["echo"]) is None
    assert queue.pop_for(["never-seen"]) is None
    assert queue.pop_for([]) is None


def test_a_discarded_task_is_no_longer_counted_and_is_skipped_when_it_reaches_the_top() -> None:
    queue = ReadyQueue()
    a, b, c = task("a", priority=2), task("b", priority=1), task("c")
    for t in (a, b, c):
        queue.push(t, 0.0)

    queue.discard(a)

    assert len(queue) == 2
    assert pop_all(queue) == ["b", "c"]
    assert len(queue) == 0


def test_discarding_a_task_twice_or_after_it_was_popped_counts_once() -> None:
    queue = ReadyQueue()
    a, b = task("a"), task("b")
    queue.push(a, 0.0)
    queue.push(b, 0.0)

    queue.discard(a)
    queue.discard(a)
    popped = queue.pop_for(["echo"])
    assert popped is b
    queue.discard(b)

    assert len(queue) == 0


def test_a_discarded_task_pushed_again_comes_out_once_behind_earlier_tasks() -> None:
    queue = ReadyQueue()
    a, b = task("a"), task("b")
    queue.push(a, 0.0)
    queue.push(b, 0.0)
    queue.discard(a)

    queue.push(a, 1.0)

    assert len(queue) == 2
    assert pop_all(queue) == ["b", "a"]


def test_a_task_that_left_the_queued_state_is_skipped() -> None:
    queue = ReadyQueue()
    a, b = task("a"), task("b")
    queue.push(a, 0.0)
    queue.push(b, 0.0)

    a.state = TaskState.CANCELLED

    assert pop_all(queue) == ["b"]


def test_handlers_waiting_lists_only_handlers_with_live_tasks() -> None:
    queue = ReadyQueue()
    gone, kept = task("gone", "search"), task("kept", "echo")
    queue.push(gone, 0.0)
    queue.push(kept, 0.0)

    queue.discard(gone)

    assert queue.handlers_waiting() == ["echo"]


def test_drain_handler_returns_its_live_tasks_and_leaves_other_handlers_alone() -> None:
    queue = ReadyQueue()
    a, b, gone = task("a", "llm"), task("b", "llm", priority=3), task("gone", "llm")
    other = task("other", "echo")
    for t in (a, b, gone, other):
        queue.push(t, 0.0)
    queue.discard(gone)

    drained = queue.drain_handler("llm")

    assert sorted(t.id for t in drained) == ["a", "b"]
    assert all(t.ready_seq == 0 for t in drained)
    assert len(queue) == 1
    assert queue.pop_for(["llm"]) is None
    assert pop_all(queue) == ["other"]
    assert queue.drain_handler("llm") == []
