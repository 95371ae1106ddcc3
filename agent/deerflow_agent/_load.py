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
    from its start; one that exited since takes its last interval with it (never a negative
    share). On Linux the tree is read from ``/proc/PID/task/TID/children`` (about 0.3 ms for an
    agent and its pool on the 2-core VM); elsewhere psutil reads every process on the machine
    (about 5 ms). Then about 0.1 ms per process of the tree.
    """

    def __init__(self, pid: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._root = psutil.Process(pid)
        self._procs: dict[int, psutil.Process] = {self._root.pid: self._root}
        self._cpus = psutil.cpu_count() or 1
        self._clock = clock
        self._wall = clock()
        self._seen: dict[tuple[int, float], float] = self._cpu_times()

    def _descendant_pids(self) -> list[int]:
        """Pids of every live descendant of the root."""
        out: list[int] = []
        frontier = [self._root.pid]
        while frontier:
            pid = frontier.pop()
            try:
                tasks = list(os.scandir(f"/proc/{pid}/task"))
            except OSError:
                if pid != self._root.pid:
                    continue  # that descendant ended meanwhile
                # No /proc (not Linux): ask psutil, which reads every process on the machine.
                try:
                    return [p.pid for p in self._root.children(recursive=True)]
                except psutil.Error:
                    return []
            for task in tasks:
                try:
                    with open(f"{task.path}/children", encoding="ascii") as f:
                        kids = [int(k) for k in f.read().split()]
                except OSError:
                    continue  # the thread ended meanwhile
                out.extend(kids)
                frontier.extend(kids)
        return out

    def _cpu_times(self) -> dict[tuple[int, float], float]:
        """(pid, create time) -> CPU seconds used so far, for the root and every descendant
        still alive. The create time tells a recycled pid from the process that had it."""
        procs = {self._root.pid: self._root}
        for pid in self._descendant_pids():
            proc = self._procs.get(pid)
            if proc is None or not proc.is_running():  # new, or its pid was reused
                try:
                    proc = psutil.Process(pid)
                except psutil.Error:
                    continue
            procs[pid] = proc
        self._procs = procs
        out: dict[tuple[int, float], float] = {}
        for proc in procs.values():
            try:
                t = proc.cpu_times()
                out[(proc.pid, proc.create_time())] = t.user + t.system
            except psutil.Error:
                continue  # exited between the listing and the read
        return out

    def percent(self) -> float:
        """Share of the machine's CPU (0-100) the tree used since the previous call."""
        now = self._clock()
        current = self._cpu_times()
        used = 0.0
        for key, cpu_s in current.items():
            # A process not seen before started since the last call (the tree is listed on every
            # call, and the constructor took the baseline): all of its CPU is new.
            used += max(0.0, cpu_s - self._seen.get(key, 0.0))
        elapsed = now - self._wall
        self._seen, self._wall = current, now
        if elapsed <= 0:
            return 0.0
        return min(100.0, 100.0 * used / (elapsed * self._cpus))


class LoadSampler:
    """Samples CPU and memory use, once per heartbeat. ``sample()`` costs about 1 ms on the
    2-core VM (0.2 ms the machine's figures, the rest the agent's process tree), never a sleep:
    psutil's non-blocking cpu_percent compares counters with the previous call, and so does
    :class:`ProcessTreeCpu`.

    Both figures are averages since the previous sample, so a sample taken less than
    ``MIN_INTERVAL_S`` after it would divide a clock tick or two of counters by almost no time
    (the machine read 0 % while the agent's own tree read 47 %, at the first heartbeat right
    after start-up): then the previous sample is repeated (zeros before the first) and the
    counters keep accumulating for the next one."""

    MIN_INTERVAL_S = 0.25

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        psutil.cpu_percent(interval=None)  # the first call only sets the baseline
        self._own = ProcessTreeCpu(clock=clock)
        self._at = clock()
        self._last = LoadSample(0.0, 0.0, 0.0)

    def sample(self) -> LoadSample:
        now = self._clock()
        if now - self._at < self.MIN_INTERVAL_S:
            return self._last
        self._at = now
        self._last = LoadSample(
            cpu_percent=float(psutil.cpu_percent(interval=None)),
            memory_percent=float(psutil.virtual_memory().percent),
            process_cpu_percent=self._own.percent(),
        )
        return self._last


def machine_capacity() -> tuple[int, int]:
    """(logical CPUs, total memory in bytes) of this machine, for Hello."""
    return os.cpu_count() or 1, int(psutil.virtual_memory().total)
