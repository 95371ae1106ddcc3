"""The heartbeat's load sample is an average since the previous one: a sample taken almost at
once after it (the first heartbeat right after start-up) repeats the previous sample instead of
dividing a tick or two of CPU counters by no time. Fake clock; the counters are the machine's."""

from __future__ import annotations

import math

from deerflow_agent._load import LoadSample, LoadSampler


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_sample_right_after_the_previous_one_repeats_it() -> None:
    clock = Clock()
    sampler = LoadSampler(clock)
    clock.now += 0.001
    assert sampler.sample() == LoadSample(0.0, 0.0, 0.0)  # nothing measured yet
    clock.now += LoadSampler.MIN_INTERVAL_S
    first = sampler.sample()
    assert first != LoadSample(0.0, 0.0, 0.0)  # memory in use is never 0 %
    assert all(math.isfinite(x) and 0 <= x <= 100 for x in (
        first.cpu_percent, first.memory_percent, first.process_cpu_percent
    ))  # fmt: skip
    clock.now += 0.01
    assert sampler.sample() is first
    clock.now += LoadSampler.MIN_INTERVAL_S
    assert sampler.sample() is not first
