"""The balancer: placement by least predicted completion, labels, CPU/memory ceilings, learned
speed, LPT order, the load ledger and work stealing. Fake clock; exact decisions."""

from __future__ import annotations

import heapq
import math

import pytest

from deerflow_controller.core.balancer import (
    AgentLedger,
    Balancer,
    BalancerConfig,
    Reason,
    lpt_key,
)
from deerflow_controller.core.model import AgentView, Job, Task, TaskSpec, TaskState
from deerflow_controller.core.predictor import Features, Predictor

JOB = Job(id="j", name="j", submitted_at=0.0)


def agent(
    agent_id: str,
    *,
    handlers: tuple[str, ...] = ("search",),
    slots: int = 2,
    prefetch: int = 2,
    labels: dict[str, str] | None = None,
    cpu: float = 10.0,
    memory: float = 10.0,
) -> AgentView:
    return AgentView(
        id=agent_id,
        handlers=frozenset(handlers),
        slots=slots,
        prefetch=prefetch,
        labels=labels or {},
        cpu_percent=cpu,
        memory_percent=memory,
    )


def task(task_id: str, handler: str = "search", labels: dict[str, str] | None = None) -> Task:
    spec = TaskSpec(id=task_id, handler=handler, labels=labels or {})
    return Task(job=JOB, spec=spec, timeout_s=60.0, max_retries=0)


def hold(b: Balancer, a: AgentView, t: Task, duration_s: float, now: float, *, start: bool) -> None:
    """Dispatch ``t`` to ``a`` (and start it) as the core would, telling the balancer."""
    t.attempt += 1
    t.agent_id = a.id
    t.state = TaskState.RUNNING if start else TaskState.DISPATCHED
    a.hold(t.key, t)
    b.assigned(a.id, t.key, duration_s)
    if start:
        b.started(a.id, t.key, now)


def same_speed(_: str) -> float:
    return 1.0


# ------------------------------------------------------------------ placement


def test_an_agent_with_a_free_slot_beats_one_whose_slots_are_busy() -> None:
    b = Balancer()
    busy, free = agent("busy", slots=1), agent("free", slots=1)
    hold(b, busy, task("t0"), 4.0, 0.0, start=True)
    choice = b.choose("search", {}, 1.0, [busy, free], same_speed, 0.0)
    assert choice.agent is free
    assert choice.finish_s == 1.0
    assert choice.reason is Reason.LEAST_FINISH


def test_completion_counts_running_and_prefetched_work_per_slot() -> None:
    b = Balancer()
    a1, a2 = agent("a1", slots=2, prefetch=4), agent("a2", slots=2, prefetch=4)
    for i in range(2):
        hold(b, a1, task(f"r{i}"), 4.0, 0.0, start=True)  # 8 s of running work
    hold(b, a1, task("p0"), 2.0, 0.0, start=False)  # 2 s prefetched
    for i in range(2):
        hold(b, a2, task(f"s{i}"), 6.0, 0.0, start=True)
    # At t=1: a1 holds (3+3+2)/2 = 4 s per slot; a2 (5+5)/2 = 5 s per slot.
    choice = b.choose("search", {}, 1.0, [a2, a1], same_speed, 1.0)
    assert choice.agent is a1
    assert choice.finish_s == pytest.approx(1.0 + 4.0 + 1.0)


def test_a_faster_agent_wins_when_both_are_free_and_loses_when_it_is_backlogged() -> None:
    b = Balancer()
    fast, slow = agent("fast", slots=1), agent("slow", slots=1)
    speeds = {"fast": 1.0, "slow": 0.5}
    assert b.choose("search", {}, 2.0, [slow, fast], speeds.__getitem__, 0.0).agent is fast
    hold(b, fast, task("t0"), 10.0, 0.0, start=True)
    choice = b.choose("search", {}, 2.0, [fast, slow], speeds.__getitem__, 0.0)
    assert choice.agent is slow
    assert choice.finish_s == 4.0


def test_labels_must_be_a_subset_of_the_agents_labels() -> None:
    b = Balancer()
    gpu = agent("gpu", labels={"gpu": "a100", "zone": "eu"})
    plain = agent("plain", labels={"zone": "eu"})
    assert b.choose("search", {"gpu": "a100"}, 1.0, [plain, gpu], same_speed, 0.0).agent is gpu
    assert b.choose("search", {"zone": "eu"}, 1.0, [plain, gpu], same_speed, 0.0).agent is plain
    none = b.choose("search", {"gpu": "h100"}, 1.0, [plain, gpu], same_speed, 0.0)
    assert none.agent is None
    assert none.reason is Reason.NO_AGENT


def test_agents_without_the_handler_credit_or_cap_room_are_skipped() -> None:
    b = Balancer()
    other = agent("other", handlers=("crawl",))
    full = agent("full", slots=1, prefetch=0)
    hold(b, full, task("t0"), 1.0, 0.0, start=True)
    capped = agent("capped", handlers=("search", "crawl"), slots=4)
    capped.handler_caps = {"search": 1}
    hold(b, capped, task("t1"), 1.0, 0.0, start=True)
    choice = b.choose("search", {}, 1.0, [other, full, capped], same_speed, 0.0)
    assert choice.agent is None
    assert choice.reason is Reason.NO_AGENT
    assert b.choose("crawl", {}, 1.0, [full, capped], same_speed, 0.0).agent is capped


def test_an_agent_over_a_ceiling_takes_nothing_while_a_cooler_one_can() -> None:
    b = Balancer()
    hot = agent("hot", cpu=85.0)
    full = agent("full", memory=80.0)
    cool = agent("cool", cpu=79.0, memory=79.0)
    hold(b, cool, task("t0"), 30.0, 0.0, start=True)
    hold(b, cool, task("t1"), 30.0, 0.0, start=True)
    choice = b.choose("search", {}, 1.0, [hot, full, cool], same_speed, 0.0)
    assert choice.agent is cool  # later finish than the idle hot agents, but under the ceilings


def test_when_all_are_over_a_ceiling_an_idle_agent_still_gets_work() -> None:
    b = Balancer()
    busy_hot = agent("busy_hot", cpu=95.0)
    hold(b, busy_hot, task("t0"), 1.0, 0.0, start=True)
    idle_hot = agent("idle_hot", cpu=95.0, slots=1)
    choice = b.choose("search", {}, 1.0, [busy_hot, idle_hot], same_speed, 0.0)
    assert choice.agent is idle_hot
    assert choice.reason is Reason.IDLE_OVER_CEILING


def test_when_all_are_over_a_ceiling_and_busy_the_task_waits() -> None:
    b = Balancer()
    busy_hot = agent("busy_hot", cpu=95.0)
    hold(b, busy_hot, task("t0"), 1.0, 0.0, start=True)
    choice = b.choose("search", {}, 1.0, [busy_hot], same_speed, 0.0)
    assert choice.agent is None
    assert choice.reason is Reason.OVER_CEILING
    assert math.isinf(choice.finish_s)


def test_ceilings_are_configurable() -> None:
    b = Balancer(BalancerConfig(cpu_ceiling_percent=99.0))
    warm = agent("warm", cpu=95.0)
    assert b.choose("search", {}, 1.0, [warm], same_speed, 0.0).reason is Reason.LEAST_FINISH


def test_learned_speed_steers_work_away_from_a_slow_agent() -> None:
    """Cold start treats both agents alike; once the predictor has seen the slow one take
    twice as long, a task goes to the fast agent even when the slow one has more free slots."""
    p = Predictor()
    b = Balancer()
    fast, slow = agent("fast", slots=1), agent("slow", slots=4)
    f = Features(0, 100)
    assert p.agent_speed("fast") == p.agent_speed("slow") == 1.0
    for i in range(200):
        who = "slow" if i % 2 else "fast"
        p.observe("search", who, f, 2.0 if who == "slow" else 1.0, 0.0, 0, 0.0, float(i))
    est = p.predict("search", f)
    choice = b.choose("search", {}, est.duration_s, [slow, fast], p.agent_speed, 0.0)
    assert choice.agent is fast
    assert choice.finish_s == pytest.approx(1.0, rel=0.05)


# ------------------------------------------------------------------ ledger


def test_ledger_backlog_counts_remaining_time_and_drops_overdue_work() -> None:
    ledger = AgentLedger()
    ledger.assigned(("j", "a", 1), 4.0)
    ledger.assigned(("j", "b", 1), 2.0)
    assert ledger.backlog_s(0.0) == 6.0
    ledger.started(("j", "a", 1), 1.0)  # predicted end 5
    assert ledger.backlog_s(2.0) == 2.0 + 3.0
    assert ledger.backlog_s(6.0) == 2.0  # "a" overran its prediction: counts as 0
    ledger.ended(("j", "a", 1), 7.0)
    assert ledger.backlog_s(7.0) == 2.0
    ledger.started(("j", "b", 1), 7.0)
    ledger.ended(("j", "b", 1), 8.0)  # ended early
    assert ledger.backlog_s(8.0) == 0.0
    assert not ledger.pending and not ledger.running


def test_ledger_stays_small_when_attempts_end_long_before_their_prediction() -> None:
    ledger = AgentLedger()
    for i in range(1000):
        key = ("j", str(i), 1)
        ledger.assigned(key, 1800.0)
        ledger.started(key, float(i))
        ledger.ended(key, float(i) + 0.5)
    assert len(ledger._ends) <= 64 + 1
    assert ledger.backlog_s(1000.0) == 0.0


def test_ledger_ignores_unknown_attempts() -> None:
    ledger = AgentLedger()
    ledger.started(("j", "x", 1), 0.0)
    ledger.ended(("j", "x", 1), 0.0)
    assert ledger.backlog_s(0.0) == 0.0


# ------------------------------------------------------------------ LPT


def test_a_burst_of_equal_priority_runs_longest_first() -> None:
    heap: list[tuple[tuple[int, float, int], str]] = []
    durations = {"short": 1.0, "long": 30.0, "mid": 5.0}
    for seq, (name, d) in enumerate(durations.items()):
        heapq.heappush(heap, (lpt_key(0, 100.0, d, seq), name))
    heapq.heappush(heap, (lpt_key(1, 100.0, 0.1, 9), "urgent"))
    order = [heapq.heappop(heap)[1] for _ in range(len(heap))]
    assert order == ["urgent", "long", "mid", "short"]


def test_a_short_task_that_waited_beats_a_newer_long_one_only_past_the_cap() -> None:
    old_short = lpt_key(0, 0.0, 1.0, 1, max_advance_s=60.0)
    newer_long = lpt_key(0, 30.0, 1000.0, 2, max_advance_s=60.0)
    much_later_long = lpt_key(0, 100.0, 1000.0, 3, max_advance_s=60.0)
    assert newer_long < old_short  # 30 s younger but 60 s head start
    assert old_short < much_later_long  # waited longer than any head start


def test_equal_keys_keep_submission_order() -> None:
    assert lpt_key(0, 5.0, 2.0, 1) < lpt_key(0, 5.0, 2.0, 2)


def test_the_balancers_order_key_uses_its_configured_cap() -> None:
    b = Balancer(BalancerConfig(lpt_max_advance_s=10.0))
    assert b.order_key(2, 100.0, 1000.0, 7) == (-2, 90.0, 7)


# ------------------------------------------------------------------ stealing


def lagging_cluster(b: Balancer) -> tuple[AgentView, AgentView, list[Task]]:
    """``lag`` (1 slot) runs a 10 s task with three 2 s tasks prefetched; ``idle`` is empty."""
    lag = agent("lag", slots=1, prefetch=3)
    idle = agent("idle", slots=2, prefetch=2)
    hold(b, lag, task("run"), 10.0, 0.0, start=True)
    queued = [task(f"q{i}") for i in range(3)]
    for t in queued:
        hold(b, lag, t, 2.0, 0.0, start=False)
    return lag, idle, queued


def test_prefetched_work_on_a_lagging_agent_moves_to_an_idle_one() -> None:
    b = Balancer()
    lag, idle, queued = lagging_cluster(b)
    steals = b.propose_steals(idle, [lag, idle], same_speed, 1.0)
    # On lag, q0/q1/q2 would finish at 12, 14, 16; on idle at 3. Largest gain first, two slots.
    assert [(s.key, s.from_agent, s.to_agent) for s in steals] == [
        (queued[2].key, "lag", "idle"),
        (queued[1].key, "lag", "idle"),
    ]
    assert [s.gain_s for s in steals] == [13.0, 11.0]
    assert all(s.reason is Reason.LAGGING for s in steals)


def test_a_slower_idle_agent_takes_work_only_where_it_still_gains() -> None:
    b = Balancer()
    lag, idle, queued = lagging_cluster(b)
    speeds = {"lag": 1.0, "idle": 0.15}  # on idle a 2 s task takes 13.3 s
    steals = b.propose_steals(idle, [lag, idle], speeds.__getitem__, 1.0)
    # Finish on idle at 14.3; on lag q0/q1/q2 at 12, 14, 16: only q2 gains.
    assert [s.key for s in steals] == [queued[2].key]
    assert steals[0].gain_s == pytest.approx(16.0 - (1.0 + 2.0 / 0.15))


def test_started_attempts_and_tasks_the_idle_agent_cannot_take_stay() -> None:
    b = Balancer()
    lag = agent("lag", handlers=("search", "crawl"), slots=1, prefetch=3)
    idle = agent("idle", handlers=("search",), slots=4, labels={"zone": "eu"})
    hold(b, lag, task("run"), 10.0, 0.0, start=True)
    hold(b, lag, task("crawl", handler="crawl"), 2.0, 0.0, start=False)
    hold(b, lag, task("us", labels={"zone": "us"}), 2.0, 0.0, start=False)
    ok = task("ok")
    hold(b, lag, ok, 2.0, 0.0, start=False)
    steals = b.propose_steals(idle, [lag, idle], same_speed, 1.0)
    assert [s.key for s in steals] == [ok.key]


def test_no_steal_for_a_small_gain_or_to_a_hot_agent() -> None:
    b = Balancer()
    lag = agent("lag", slots=1, prefetch=1)
    hold(b, lag, task("run"), 1.02, 0.0, start=True)
    hold(b, lag, task("q"), 1.0, 0.0, start=False)
    idle = agent("idle")
    assert b.propose_steals(idle, [lag, idle], same_speed, 1.0) == []  # gains 0.02 s
    lag2, idle2, _ = lagging_cluster(b2 := Balancer())
    idle2.cpu_percent = 90.0
    assert b2.propose_steals(idle2, [lag2, idle2], same_speed, 1.0) == []


def test_an_agent_with_no_free_slot_steals_nothing() -> None:
    b = Balancer()
    lag, idle, _ = lagging_cluster(b)
    hold(b, idle, task("mine0"), 1.0, 0.0, start=True)
    hold(b, idle, task("mine1"), 1.0, 0.0, start=True)
    assert b.propose_steals(idle, [lag, idle], same_speed, 0.5) == []
