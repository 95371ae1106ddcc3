"""The core's run-time settings (the tuner's knobs), driven with a fake clock: the per-agent slot
limit, the prefetch floor and the rate keys' concurrency ceiling."""

from __future__ import annotations

import pytest

from deerflow_controller.ratelimit import KeyLimits, LimiterConfig, RateLimiter

from .scheduling import JOB, assigned, key, make, ok, spec


def test_a_slot_limit_gives_an_agent_fewer_attempts_than_it_declared() -> None:
    s = make(slot_limit=2)
    s.agent_joined("A", ["echo"], 8, 0.0)
    s.submit(JOB, "", [spec(f"t{i}") for i in range(10)], 0.0)

    assert assigned(s.take()) == {"A": [key("t0", 1), key("t1", 1)]}
    assert s.declared_slots() == 8


def test_raising_the_slot_limit_dispatches_at_once_up_to_the_declared_slots() -> None:
    s = make(slot_limit=1)
    s.agent_joined("A", ["echo"], 4, 0.0)
    s.submit(JOB, "", [spec(f"t{i}") for i in range(10)], 0.0)
    s.take()

    s.set_slot_limit(100, 1.0)

    assert assigned(s.take()) == {"A": [key(f"t{i}", 1) for i in range(1, 4)]}
    assert s.agents["A"].slots == 4


def test_lowering_the_slot_limit_cancels_nothing_and_waits_for_attempts_to_end() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 4, 0.0)
    s.submit(JOB, "", [spec(f"t{i}") for i in range(10)], 0.0)
    s.take()

    s.set_slot_limit(2, 1.0)
    out = s.take()
    assert out.assignments == {} and out.cancels == {}
    s.finished("A", [ok("t0", 1), ok("t1", 1)], 2.0)
    assert assigned(s.take()) == {}
    s.finished("A", [ok("t2", 1)], 3.0)
    assert assigned(s.take()) == {"A": [key("t4", 1)]}


def test_zero_means_what_each_agent_declared_and_a_negative_limit_is_refused() -> None:
    s = make(slot_limit=1)
    s.agent_joined("A", ["echo"], 3, 0.0)
    s.set_slot_limit(0, 1.0)
    assert s.agents["A"].slots == 3
    with pytest.raises(ValueError, match="slot limit"):
        s.set_slot_limit(-1, 1.0)


def test_the_prefetch_floor_adds_attempts_beyond_the_slots() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 2, 0.0)
    s.submit(JOB, "", [spec(f"t{i}") for i in range(10)], 0.0)
    s.take()

    s.set_prefetch(3, 1.0)

    assert len(assigned(s.take())["A"]) == 3
    assert s.agents["A"].credit == 0


def test_a_rate_key_ceiling_caps_its_adaptive_concurrency_and_applies_to_new_keys() -> None:
    limiter = RateLimiter(
        LimiterConfig((("llm", KeyLimits(rpm=6000, max_concurrency=64)),), KeyLimits())
    )
    gate = limiter.gate("llm", 0.0)
    assert gate.concurrency is not None and gate.concurrency.value == 64

    limiter.set_max_concurrency(8)
    assert gate.concurrency.value == 8
    later = limiter.gate("other", 0.0)
    assert later.concurrency is not None and later.concurrency.max_limit <= 8

    limiter.set_max_concurrency(0)
    assert gate.concurrency.max_limit == 64
