"""Load for heartbeats, sampled with psutil without blocking the event loop: the machine's CPU and
memory, and the CPU of the agent's own processes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

__all__ = ["LoadSample", "LoadSampler", "ProcessTreeCpu", "machine_capacity"]


@dataclass(frozen=True, slots=True)
class LoadSample:
    cpu_percent: float
    """Whole machine, 0-100, averaged since the previous sample: every process on it counts."""
    memory_percent: float
    """Whole machine, 0-100."""
    process_cpu_percent: float
    """The agent's own process tree (the agent, its cpu handlers' pool workers and their helper
    processes), 0-100 of the whole machine like ``cpu_percent``, averaged since the previous
    sample."""


class ProcessTreeCpu:
    """CPU used by one process and all its descendants, as a share of the machine.

    Each ``percent()`` call compares the tree's CPU times (user + system) with the previous call's.
    Processes come and go (a crashed pool worker is replaced): a descendant first seen now counts
    from its start if it started after the previous call, otherwise from now; one that exited
    since takes its last interval with it (never a negative share). Costs about 20 us per process.
    """

    def __init__(self, pid: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._root = psutil.Process(pid)
        self._cpus = psutil.cpu_count() or 1
        self._clock = clock
        self._wall = clock()
        self._epoch_wall = time.time()
        self._seen: dict[tuple[int, float], float] = self._cpu_times()

    def _cpu_times(self) -> dict[tuple[int, float], float]:
        """(pid, create time) -> CPU seconds used so far, for the root and every descendant
        still alive. The create time tells a recycled pid from the process that had it."""
        out: dict[tuple[int, float], float] = {}
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            procs = [self._root]
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    out[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                continue  # exited between the listing and the read
        return out

    def percent(self) -> float:
        """Share of the machine's CPU (0-100) the tree used since the previous call."""
        now, epoch_now = self._clock(), time.time()
        current = self._cpu_times()
        used = 0.0
        for key, cpu_s in current.items():
            before = self._seen.get(key)
            if before is None:
                # New since the last call: count all of it if it started since, else none yet.
                before = 0.0 if key[1] >= self._epoch_wall else cpu_s
            used += max(0.0, cpu_s - before)
        elapsed = now - self._wall
        self._seen, self._wall, self._epoch_wall = current, now, epoch_now
        if elapsed <= 0:
            return 0.0
        return min(100.0, 100.0 * used / (elapsed * self._cpus))


class LoadSampler:
    """Samples CPU and memory use. ``sample()`` costs tens of microseconds plus about 20 us per
    process of the agent: psutil's non-blocking cpu_percent compares counters with the previous
    call instead of sleeping, and so does :class:`ProcessTreeCpu`."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # the first call only sets the baseline
        self._own = ProcessTreeCpu()

    def sample(self) -> LoadSample:
        return LoadSample(
            cpu_percent=float(psutil.cpu_percent(interval=None)),
            memory_percent=float(psutil.virtual_memory().percent),
            process_cpu_percent=self._own.percent(),
        )


def machine_capacity() -> tuple[int, int]:
    """(logical CPUs, total memory in bytes) of this machine, for Hello."""
    return os.cpu_count() or 1, int(psutil.virtual_memory().total)
