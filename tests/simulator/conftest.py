"""Fixtures that start real simulators on free loopback ports, driven by a fake clock.

The fake clock only drives the rate limits and brown-out windows, so buckets do not refill
between a test's requests and every 429 is decided by the requests sent, not by timing.
Latencies stay real sleeps, scaled down to milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from deerflow_simulator import KeyLimits, SimConfig, Simulator

from .helpers import KEY, FakeClock

StartSimulator = Callable[..., Awaitable[Simulator]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def start(clock: FakeClock) -> AsyncIterator[StartSimulator]:
    """``await start({"k": KeyLimits(rpm=60)}, error_rate=0.1)``: a started simulator (default:
    one key ``KEY`` without limits, time_scale 0.001); all are stopped at the end of the test."""
    started: list[Simulator] = []

    async def factory(keys: dict[str, KeyLimits] | None = None, **fields: Any) -> Simulator:
        fields.setdefault("time_scale", 0.001)
        config = SimConfig(keys={KEY: KeyLimits()} if keys is None else keys, **fields)
        simulator = Simulator(config, clock=clock)
        await simulator.start()
        started.append(simulator)
        return simulator

    yield factory
    for simulator in started:
        await simulator.stop()
