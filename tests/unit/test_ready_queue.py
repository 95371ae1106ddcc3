"""ReadyQueue: per-handler priority queues, FIFO among equals, lazily discarded entries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deerflow_controller.core.model import Job, Task, TaskSpec, TaskState
from deerflow_controller.core.ready_queue import ReadyQueue

JOB = Job(id="j", name="", submitted_at=0.0)


def task(task_id: str, handler: str = "echo", priority: int = 0, tenant: str = "") -> Task:
    return Task(
        job=JOB,
        spec=TaskSpec(id=task_id, handler=handler, priority=priority, tenant=tenant),
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


def test_a_discarded_task_pushed_again_comes_out_once_in_its_old_place() -> None:
    queue = ReadyQueue()
    a, b = task("a"), task("b")
    queue.push(a, 0.0)
    queue.push(b, 0.0)
    queue.discard(a)

    queue.push(a, 1.0)

    assert len(queue) == 2
    assert pop_all(queue) == ["a", "b"]
    assert len(queue) == 0


def test_a_task_pushed_again_keeps_the_order_of_its_first_push() -> None:
    queue = ReadyQueue()
    first = task("first")
    queue.push(first, 0.0, order=-5.0)
    assert queue.pop_for(["echo"]) is first
    for name in ("b", "c"):
        queue.push(task(name), 1.0, order=1.0)

    queue.push(first, 9.0, order=9.0)  # retried: it was ready before b and c

    assert first.ready_at == 9.0
    assert pop_all(queue) == ["first", "b", "c"]


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


# ----------------------------------------------------------------- tenants


def tenant_tasks(tenant: str, n: int, priority: int = 0) -> list[Task]:
    return [task(f"{tenant}{i}", priority=priority, tenant=tenant) for i in range(n)]


def test_two_tenants_of_one_priority_take_turns_whatever_they_submitted_first() -> None:
    queue = ReadyQueue()
    for t in tenant_tasks("a", 16):
        queue.push(t, 0.0)
    for t in tenant_tasks("b", 4):
        queue.push(t, 1.0)

    order = pop_all(queue)

    assert order[:8] == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3"]
    assert order[8:] == [f"a{i}" for i in range(4, 16)]


def test_tenant_weights_share_a_priority_in_proportion() -> None:
    queue = ReadyQueue({"a": 3.0, "c": 0.5})
    for name in ("a", "b", "c"):
        for t in tenant_tasks(name, 12):
            queue.push(t, 0.0)

    first = [tid[0] for tid in pop_all(queue)[:18]]

    assert (first.count("a"), first.count("b"), first.count("c")) == (12, 4, 2)


def test_a_higher_priority_goes_first_whichever_tenant_has_it() -> None:
    queue = ReadyQueue({"a": 100.0})
    for t in tenant_tasks("a", 3):
        queue.push(t, 0.0)
    for t in tenant_tasks("b", 2, priority=1):
        queue.push(t, 1.0)

    assert pop_all(queue) == ["b0", "b1", "a0", "a1", "a2"]


def test_within_a_tenant_the_given_order_holds_while_tenants_take_turns() -> None:
    queue = ReadyQueue()
    for name, order in [("a-short", 0.0), ("a-long", -3.0), ("a-mid", -1.0)]:
        queue.push(task(name, tenant="a"), 0.0, order=order)
    for name, order in [("b-short", 0.0), ("b-long", -2.0)]:
        queue.push(task(name, tenant="b"), 0.0, order=order)

    assert pop_all(queue) == ["a-long", "b-long", "a-mid", "b-short", "a-short"]


def test_a_tenant_that_was_idle_saves_no_credit_for_later() -> None:
    queue = ReadyQueue()
    for t in tenant_tasks("a", 6):
        queue.push(t, 0.0)
    assert [queue.pop_for(["echo"]).id for _ in range(3)] == ["a0", "a1", "a2"]  # type: ignore[union-attr]

    for t in tenant_tasks("b", 4):
        queue.push(t, 1.0)

    assert pop_all(queue) == ["a3", "b0", "a4", "b1", "a5", "b2", "b3"]


def test_discarded_tasks_of_a_tenant_do_not_take_its_turns() -> None:
    queue = ReadyQueue()
    a_tasks, b_tasks = tenant_tasks("a", 3), tenant_tasks("b", 3)
    for a, b in zip(a_tasks, b_tasks, strict=True):
        queue.push(a, 0.0)
        queue.push(b, 0.0)
    queue.discard(a_tasks[0])
    queue.discard(a_tasks[1])

    assert pop_all(queue) == ["a2", "b0", "b1", "b2"]
    assert len(queue) == 0


def test_a_tenant_weight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="tenant 'x' has weight 0"):
        ReadyQueue({"x": 0.0})


def test_the_default_tenant_takes_its_turn_beside_a_named_one() -> None:
    # The default tenant is "": a tenant chosen by truthiness was never chosen, and a lane with
    # a named tenant and a better-priority task of the default one failed the dispatch.
    q = ReadyQueue()
    named = task("named", priority=0, tenant="team-a")
    default = task("default", priority=1, tenant="")
    q.push(named, 0.0)
    q.push(default, 0.0)
    assert [q.pop_for(["echo"]), q.pop_for(["echo"])] == [default, named]


# One tenant's tasks leave smallest (-priority, order, place) first, whatever mix of in-order
# pushes (a submit's burst: the sorted run) and out-of-order ones (the heap beside it), re-pushes,
# discards and state changes behind the queue's back came before. Model: the live tasks' keys.
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from((0, 0, 1, 2)), st.sampled_from((0.0, 1.0, 2.0))),
        st.tuples(st.just("again"), st.integers(0, 40), st.just(0.0)),
        st.tuples(st.just("discard"), st.integers(0, 40), st.just(0.0)),
        st.tuples(st.just("leave"), st.integers(0, 40), st.just(0.0)),
        st.tuples(st.just("pop"), st.just(0), st.just(0.0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(ops=_OPS, run_first=st.integers(0, 30))
def test_tasks_of_one_tenant_leave_in_key_order_whatever_was_pushed_before(
    ops: list[tuple[str, int, float]], run_first: int
) -> None:
    queue = ReadyQueue()
    tasks: list[Task] = []
    key: dict[str, tuple[int, float, int]] = {}  # a task's rank, fixed at its first push
    live: set[str] = set()
    places = 0

    def push(t: Task, order: float) -> None:
        nonlocal places
        queue.push(t, 0.0, order)
        if t.id not in key:
            places += 1
            key[t.id] = (-t.spec.priority, order, places)
        live.add(t.id)

    # A burst first (pushed in order: the run), then the mix.
    for i in range(run_first):
        t = task(f"b{i}")
        tasks.append(t)
        push(t, 0.0)
    for op, arg, order in ops:
        if op == "push":
            t = task(f"t{len(tasks)}", priority=arg)
            tasks.append(t)
            push(t, order)
        elif tasks and op == "again":
            push(tasks[arg % len(tasks)], order)
        elif tasks and op == "discard":
            t = tasks[arg % len(tasks)]
            queue.discard(t)
            live.discard(t.id)
        elif tasks and op == "leave":
            t = tasks[arg % len(tasks)]
            if t.id in live:
                t.state = TaskState.DISPATCHED  # without discard: skipped, and uncounted, later
                live.discard(t.id)
        elif op == "pop":
            popped = queue.pop_for(("echo",))
            expected = min(live, key=key.__getitem__) if live else None
            assert (popped.id if popped else None) == expected
            if popped is not None:
                live.discard(popped.id)
    assert pop_all(queue) == sorted(live, key=key.__getitem__)
    assert len(queue) == 0
