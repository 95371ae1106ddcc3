"""Idle rate-key gates are evicted (issue #17, finding 5): a flood of unique rate keys does
not keep a gate per key for ever, dispatch walks only the gates with tasks waiting, and a key
that learned something from its provider keeps its gate (up to a cap)."""

from __future__ import annotations

import pytest

from deerflow_controller.core.model import Job, Task, TaskSpec
from deerflow_controller.ratelimit import KeyLimits, LimiterConfig, RateLimiter
from deerflow_controller.ratelimit import limiter as limiter_module

from .test_ratelimit_limiter import metadata

JOB = Job(id="j", name="", submitted_at=0.0)


def task(task_id: str, *rate_keys: str) -> Task:
    spec = TaskSpec(id=task_id, handler="llm", rate_keys=rate_keys)
    return Task(job=JOB, spec=spec, timeout_s=60.0, max_retries=3)


def run_once(lim: RateLimiter, t: Task, now: float) -> None:
    lim.offer(t, now)
    assert lim.release(now) == [t]
    lim.end_attempt(t)


def test_a_flood_of_unique_rate_keys_leaves_no_gate_once_they_are_idle() -> None:
    lim = RateLimiter()
    for i in range(20_000):
        run_once(lim, task(f"t{i}", f"user-{i}"), float(i) * 0.001)
    assert len(lim.gates) < 5_000  # swept as they doubled (was 20,000: one per key, for ever)
    # A minute on, every bucket is full again: the next offer sweeps all the idle ones.
    later = task("late", "k")
    lim.offer(later, 120.0)
    assert set(lim.gates) == {"k"}
    assert lim.evicted >= 20_000
    assert lim.release(120.0) == [later]


def test_dispatch_walks_only_the_gates_with_tasks_waiting() -> None:
    lim = RateLimiter(LimiterConfig((("tight", KeyLimits(rpm=60, concurrency=1)),)))
    for i in range(2_000):
        run_once(lim, task(f"t{i}", f"user-{i}"), 0.0)
    held = task("held", "tight")
    run_once(lim, held, 0.0)
    lim.offer(held, 0.0)  # waits: 'tight' has no request left this second
    assert [g.key for g in lim._busy_gates()] == ["tight"]
    assert lim.waiting == 1


def test_a_gate_holding_slots_or_tasks_is_never_evicted() -> None:
    lim = RateLimiter(sweep_every_s=0.0, min_sweep_gates=0)
    running = task("running", "a", "b")
    lim.offer(running, 0.0)
    assert lim.release(0.0) == [running]  # holds a slot of a and b
    lim.offer(task("other", "c"), 100.0)  # sweeps
    assert {"a", "b"} <= set(lim.gates)
    lim.end_attempt(running)
    lim.offer(task("again", "c"), 200.0)
    assert "a" not in lim.gates and "b" not in lim.gates


def test_a_key_that_learned_from_its_provider_keeps_its_gate_up_to_a_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lim = RateLimiter(sweep_every_s=0.0, min_sweep_gates=0)
    t = task("t", "taught")
    lim.offer(t, 0.0)
    assert lim.release(0.0) == [t]
    lim.observe(t, metadata(status="429", retry_after="1"), 0.0)
    lim.end_attempt(t)
    learned_rate = lim.gates["taught"].request_rate()
    run_once(lim, task("u", "plain"), 0.0)
    lim.offer(task("x", "z"), 600.0)  # sweeps: 'plain' goes, 'taught' stays
    assert "plain" not in lim.gates
    assert lim.gates["taught"].request_rate() == learned_rate
    monkeypatch.setattr(limiter_module, "MAX_IDLE_LEARNED_GATES", 0)
    lim.offer(task("y", "z"), 700.0)  # past the cap, the oldest learned ones go too
    assert "taught" not in lim.gates
