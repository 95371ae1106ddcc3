"""Waiting with deadlines instead of sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


async def next_within(events: AsyncIterator[T], seconds: float) -> T:
    """The iterator's next item, or fail the test after ``seconds``."""
    async with asyncio.timeout(seconds):
        return await anext(events)


def now() -> float:
    return asyncio.get_running_loop().time()
