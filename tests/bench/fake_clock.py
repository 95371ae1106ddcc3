"""A fake clock for the baselines' tests: sleeps advance time at once (and yield to the event
loop), and every sleep is recorded."""

from __future__ import annotations

import asyncio


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)
