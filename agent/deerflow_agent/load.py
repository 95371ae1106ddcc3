"""Machine load for heartbeats, sampled with psutil without blocking the event loop."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

__all__ = ["LoadSample", "LoadSampler", "machine_capacity"]


@dataclass(frozen=True, slots=True)
class LoadSample:
    cpu_percent: float
    """Whole machine, 0-100, averaged since the previous sample."""
    memory_percent: float
    """Whole machine, 0-100."""


class LoadSampler:
    """Samples CPU and memory use. ``sample()`` costs tens of microseconds: psutil's
    non-blocking cpu_percent compares counters with the previous call instead of sleeping."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # the first call only sets the baseline

    def sample(self) -> LoadSample:
        return LoadSample(
            cpu_percent=float(psutil.cpu_percent(interval=None)),
            memory_percent=float(psutil.virtual_memory().percent),
        )


def machine_capacity() -> tuple[int, int]:
    """(logical CPUs, total memory in bytes) of this machine, for Hello."""
    return os.cpu_count() or 1, int(psutil.virtual_memory().total)
