"""A new job's roots are released in one pass (``core_dispatch.release_roots``): what depends
only on a root's handler is asked once per handler, and plain roots skip the general path.

The property: over jobs of every kind of root (handlers that are unknown, undeclared, cacheable,
nondeterministic, split by items; roots with labels, timers, rate keys, inputs, their own cache
or split policy), submitted before or after the agents settle and after an earlier job filled the
cache, the core decides exactly what it decides when each root goes through ``make_ready`` in
turn: the same events, assignments, queue order, timers, predictions and cache counts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from deerflow_controller.cache import ResultCache
from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.model import (
    CachePolicy,
    HandlerTraits,
    SplitPolicy,
    Task,
    TaskSpec,
    TaskState,
)
from deerflow_controller.core.scheduler import AttemptResult, Scheduler
from deerflow_controller.core.types import SplitRun
from deerflow_controller.ratelimit import KeyLimits, LimiterConfig, RateLimiter

TRAITS = {
    "plain": HandlerTraits(default_duration_s=0.2),
    "cached": HandlerTraits(cacheable=True, default_duration_s=0.3),
    "nondet": HandlerTraits(cacheable=True, nondeterministic=True),
    "items": HandlerTraits(items_field="items", default_duration_s=2.0),
}
OFFERED = (*TRAITS, "undeclared")  # "undeclared": offered, no traits
HANDLERS = (*OFFERED, "missing")  # "missing": no agent offers it
GRACE_S = 10.0


class OneByOne(Scheduler):
    """The oracle: every root through make_ready, in order."""

    def _release_roots(self, roots: list[Task], now: float) -> None:
        for task in roots:
            self._make_ready(task, now)


def build(cls: type[Scheduler]) -> Scheduler:
    limiter = RateLimiter(
        LimiterConfig((("k", KeyLimits(rpm=60, concurrency=1, adaptive=False)),), KeyLimits())
    )
    config = SchedulerConfig(unknown_handler_grace_s=GRACE_S, prefetch=1, prefetch_fraction=0.0)
    s = cls(config, limiter=limiter, seed=3, cache=ResultCache())
    s.agent_joined("a0", OFFERED, 3, 0.0, traits=TRAITS)
    s.agent_joined("a1", OFFERED, 2, 0.0, labels={"zone": "b"}, traits=TRAITS)
    return s


@st.composite
def task_specs(draw: st.DrawFn, index: int) -> TaskSpec:
    handler = draw(st.sampled_from(HANDLERS))
    if handler == "items":
        payload = json.dumps({"items": list(range(draw(st.sampled_from((0, 1, 3, 40)))))}).encode()
    else:  # few distinct payloads: the second job hits what the first cached
        payload = json.dumps({"q": draw(st.integers(0, 2))}).encode()
    deps = draw(st.sets(st.integers(0, index - 1), max_size=2)) if index else set()
    depends_on = tuple(f"t{i}" for i in sorted(deps))
    return TaskSpec(
        id=f"t{index}",
        handler=handler,
        payload=payload,
        priority=draw(st.sampled_from((0, 0, 1))),
        depends_on=depends_on,
        inputs_all=draw(st.booleans()),  # a root's reads nothing, but it is not cached
        labels=draw(st.sampled_from(({}, {}, {"zone": "b"}, {"zone": "c"}))),
        schedule_to_close_s=draw(st.sampled_from((0.0, 0.0, 30.0))),
        schedule_to_start_s=draw(st.sampled_from((0.0, 0.0, 20.0))),
        rate_keys=draw(st.sampled_from(((), (), ("k",)))),
        tenant=draw(st.sampled_from(("", "t1"))),
        est_duration_s=draw(st.sampled_from((0.0, 0.0, 0.7))),
        cache=draw(st.sampled_from((CachePolicy.DEFAULT,) * 4 + tuple(CachePolicy))),
        split=draw(st.sampled_from((SplitPolicy.AUTO, SplitPolicy.AUTO, SplitPolicy.NEVER))),
    )


@st.composite
def jobs(draw: st.DrawFn) -> list[TaskSpec]:
    n = draw(st.integers(1, 12))
    return [draw(task_specs(i)) for i in range(n)]


def observe(s: Scheduler, assignments: list[list[tuple[str, str, int]]]) -> object:
    """Everything the two cores must agree on."""
    tasks = [t for job in s.jobs.values() for t in [*job.tasks.values(), *job.parts.values()]]
    cache = s.cache
    assert cache is not None
    return (
        [list(job.events) for job in s.jobs.values()],
        assignments,
        [
            (
                t.state,
                t.attempt,
                t.agent_id,
                t.predicted_s,
                t.features,
                t.ready_seq,
                t.queue_place,
                t.queue_order,
                t.close_at,
                t.scheduled_attempt,
                t.split is False,
                isinstance(t.split, SplitRun),
                None if t.cache_key is None else (t.cache_key.digest, t.cache_key.refresh),
            )
            for t in tasks
        ],
        dict(cache.skips),
        cache.misses,
        dict(cache.hits),
        len(s._timers),
        len(s.ready),
    )


def run(
    cls: type[Scheduler], first: Sequence[TaskSpec], second: Sequence[TaskSpec], at: float
) -> object:
    s = build(cls)
    sent: list[list[tuple[str, str, int]]] = []

    def take() -> list[tuple[str, str, int]]:
        out = s.take()
        return [(agent, *t.key[1:]) for agent, ts in out.assignments.items() for t in ts]

    s.submit("j1", "", list(first), at)
    sent.append(take())
    # The first job's attempts succeed, so the second finds its answers cached.
    for _ in range(20):
        batch = sent[-1]
        if not batch:
            break
        for agent, task_id, attempt in batch:
            key = ("j1", task_id, attempt)
            s.finished(agent, [AttemptResult(key, True, b"out:" + task_id.encode())], at + 1)
        sent.append(take())
    s.submit("j2", "", list(second), at + 2)
    sent.append(take())
    return observe(s, sent)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(first=jobs(), second=jobs(), at=st.sampled_from((1.0, GRACE_S + 5.0)))
def test_releasing_roots_together_decides_what_releasing_them_in_turn_decides(
    first: list[TaskSpec], second: list[TaskSpec], at: float
) -> None:
    assert run(Scheduler, first, second, at) == run(OneByOne, first, second, at)


def test_plain_roots_take_the_short_path_and_count_their_skips() -> None:
    """The short path is taken (so the property above compares two different paths): the
    plain roots of an offered, non-cacheable handler are queued without make_ready, and each
    counts one NOT_CACHEABLE skip."""
    s = build(Scheduler)
    calls: list[str] = []
    make_ready = s._make_ready

    def counting(task: Task, now: float, detail: str = "") -> None:
        calls.append(task.id)
        make_ready(task, now, detail)

    s._make_ready = counting  # type: ignore[method-assign]
    specs = [TaskSpec(id=f"p{i}", handler="plain", payload=b"{}") for i in range(5)]
    specs.append(TaskSpec(id="c", handler="cached", payload=b"{}"))
    s.submit("j", "", specs, GRACE_S + 1)
    assert calls == ["c"]
    assert s.cache is not None
    assert s.cache.skips[next(r for r in s.cache.skips if r.value == "not_cacheable")] == 5
    states = {t.id: t.state for t in s.jobs["j"].tasks.values()}
    assert set(states.values()) <= {TaskState.QUEUED, TaskState.DISPATCHED}
