"""Progress reports of running attempts, throttled per attempt (``TaskContext.progress`` may be
called in a tight loop; the stream carries at most two reports a second per attempt)."""

from __future__ import annotations

from deerflow_common.errors import AttemptKey

__all__ = ["PROGRESS_INTERVAL_S", "ProgressReport", "ProgressThrottle"]


PROGRESS_INTERVAL_S = 0.5
"""Least time between two Progress reports of one attempt. Heartbeat timeouts are seconds or
more, so two reports a second keep any of them alive, while a handler that calls
``ctx.progress`` per item of a tight loop costs the stream two small messages a second."""

ProgressReport = tuple[float, str]
"""(fraction 0-1 or -1 when unknown, message) of one TaskContext.progress call."""


class ProgressThrottle:
    """At most one progress report per attempt per ``interval_s``; a report that comes sooner is
    held, and the latest held report is sent when the interval has passed. Pure: the caller
    passes the time and arranges the wake-up.

    Memory: one entry per attempt that reported progress, until :meth:`forget`."""

    __slots__ = ("_pending", "_sent_at", "interval_s")

    def __init__(self, interval_s: float = PROGRESS_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._sent_at: dict[AttemptKey, float] = {}
        self._pending: dict[AttemptKey, ProgressReport] = {}

    def __bool__(self) -> bool:
        return bool(self._sent_at)

    def offer(self, key: AttemptKey, report: ProgressReport, now: float) -> tuple[bool, float]:
        """``(True, 0)``: send ``report`` now. ``(False, t)``: it is held; call :meth:`take` at
        time ``t`` (a positive t only for the first held report of an interval: later ones
        replace it and return ``(False, 0)``, as the wake-up is already arranged)."""
        sent_at = self._sent_at.get(key)
        if sent_at is None or now - sent_at >= self.interval_s:
            self._sent_at[key] = now
            self._pending.pop(key, None)
            return True, 0.0
        first = key not in self._pending
        self._pending[key] = report
        return False, sent_at + self.interval_s if first else 0.0

    def take(self, key: AttemptKey, now: float) -> ProgressReport | None:
        """The held report of ``key`` to send now, if any (its wake-up came)."""
        report = self._pending.pop(key, None)
        if report is not None:
            self._sent_at[key] = now
        return report

    def forget(self, key: AttemptKey) -> None:
        """The attempt ended: drop what is held (its Result supersedes any progress)."""
        self._sent_at.pop(key, None)
        self._pending.pop(key, None)
