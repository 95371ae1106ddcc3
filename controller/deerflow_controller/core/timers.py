"""The scheduling core's timers: one heap of (when, seq, kind, subject, token) with lazy
invalidation. A timer is never removed when its reason goes away; whoever fires it checks that
its subject still wants it (the token is the attempt or failure count it was armed for), and
:meth:`TimerHeap.push` compacts the heap when it has doubled so finished tasks do not keep their
deadlines in it for a whole timeout."""

from __future__ import annotations

import heapq
from enum import IntEnum

from deerflow_controller.core.model import Task

__all__ = ["TASK_TIMERS", "TimerEntry", "TimerHeap", "TimerKind"]


class TimerKind(IntEnum):
    RETRY = 1
    DEADLINE = 2
    EXPIRE_JOB = 3
    ORPHAN_SWEEP = 4
    LIVENESS = 5
    RATE_RELEASE = 6
    SCHEDULE_TO_START = 7
    HEARTBEAT = 8
    RECOVERY = 9
    SCHEDULE_TO_CLOSE = 10
    JOB_DEADLINE = 11


TASK_TIMERS = frozenset(
    {
        TimerKind.DEADLINE,
        TimerKind.HEARTBEAT,
        TimerKind.SCHEDULE_TO_START,
        TimerKind.SCHEDULE_TO_CLOSE,
    }
)
"""Timers about one task (about one attempt of it, but for schedule-to-close, whose token is
0): dead once the task ends or moves to a later attempt."""

TimerEntry = tuple[float, int, TimerKind, object, int]
"""(when in seconds, push order, kind, subject, token)."""

_MIN_FLOOR = 4096


class TimerHeap:
    """A min-heap of timers by time, then push order. :attr:`entries` is the heap list itself,
    kept the same object for the heap's life (the core's tick loop holds it while timers fire,
    and compaction rewrites it in place)."""

    __slots__ = ("_floor", "_seq", "entries")

    def __init__(self) -> None:
        self.entries: list[TimerEntry] = []
        self._seq = 0
        self._floor = _MIN_FLOOR

    def __len__(self) -> int:
        return len(self.entries)

    def next_at(self) -> float | None:
        """Earliest timer's time, or None when there is none."""
        return self.entries[0][0] if self.entries else None

    def push(self, when: float, kind: TimerKind, subject: object, token: int = 0) -> None:
        """Arm a timer at ``when`` (seconds, the core's clock)."""
        self._seq += 1
        heapq.heappush(self.entries, (when, self._seq, kind, subject, token))
        if len(self.entries) > 2 * self._floor:
            self.compact()

    def compact(self) -> None:
        """Drop deadline timers of attempts that already ended. Runs when the heap has doubled
        since the last compaction, so its cost is amortised O(1) per timer; without it every
        finished task would leave a deadline in the heap for its whole timeout."""
        live = [
            t
            for t in self.entries
            if t[2] not in TASK_TIMERS
            or (isinstance(t[3], Task) and not t[3].terminal and t[3].attempt >= t[4])
        ]
        # In place: tick() holds a reference to this list while timers fire.
        self.entries[:] = live
        heapq.heapify(self.entries)
        self._floor = max(_MIN_FLOOR, len(live))
