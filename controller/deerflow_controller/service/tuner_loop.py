"""The tuner at the controller's edge: every interval it measures the window since the last step
(the core's counters, the limiter's 429s, the latency tap's samples), reads the knobs, asks the
pure :class:`~deerflow_controller.tuning.Tuner` and applies its answer through
:meth:`Shell.tune`. Each change, verdict and suggestion is logged, kept in the tuner's bounded
history (admin ``GetStats``, ``deerflow stats``, the dashboard) and exported as a
``deerflow.tuner`` span whose events say what changed, why, and the numbers before and after.

Under HA each leadership term starts a fresh scheduler with the configured settings; the loop
reads the knobs from the current one at every step, so a trial that straddles a takeover is
judged on the new leader's values (at worst one wasted trial).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from deerflow_common import tracing
from deerflow_controller.observability.metrics import TaskMetrics
from deerflow_controller.service.shell import Shell
from deerflow_controller.tuning import (
    AGENT_SLOTS,
    PREFETCH,
    RATE_KEY_CONCURRENCY,
    Change,
    Knob,
    Measurement,
    Mode,
    Outcome,
    Tuner,
    p95,
)

log = logging.getLogger(__name__)

WAITING_SAMPLES = 2_000
"""Tasks still waiting for an agent whose waits so far join a window's wait samples (bounded:
a window reads at most this many of a long queue, the longest-followed jobs first)."""

SATURATED = 0.9
"""Share of the agents' slots in use from which they count as full."""
SPAN_NAME = "deerflow.tuner"
_HEAD = tracing.span_head(SPAN_NAME, tracing.KIND_INTERNAL)
_E = tracing.EVENT_ATTR


class TunerLoop:
    """Drives one :class:`Tuner` for one shell (see the module docstring)."""

    def __init__(
        self,
        shell: Shell,
        tuner: Tuner,
        metrics: TaskMetrics | None,
        emit_span: Callable[[bytes], None] | None = None,
    ) -> None:
        self.shell = shell
        self.tuner = tuner
        self.metrics = metrics
        self.emit_span = emit_span
        self._task: asyncio.Task[None] | None = None
        self._last: tuple[float, int, int, int, int] | None = None
        self._seen: dict[str, tuple[int, int]] = {}
        self._open: dict[int, Change] = {}
        self._reported = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.tuner.config.mode is Mode.OFF:
            return
        self.measure()  # the first window starts now
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tuner.config.interval_s)
            try:
                self.step()
            except Exception:  # a tuner bug must not stop the controller
                log.exception("tuner step failed")

    # ------------------------------------------------------------------ one step

    def step(self) -> None:
        """Measure, decide, apply, report (one interval)."""
        m = self.measure()
        if m is None:
            return
        action = self.tuner.step(m.end, m, self.knobs())
        if action is not None and self.tuner.config.mode is Mode.ON:
            self.shell.tune(action.knob, action.value)
        self._report()

    def measure(self) -> Measurement | None:
        """The window since the previous call (None on the first call, which starts it)."""
        shell = self.shell
        sched = shell.scheduler
        c = sched.counters
        now = shell.clock()
        limiter = sched.limiter
        limited = limiter.evicted_rate_limited + sum(
            g.stats.rate_limited for g in limiter.gates.values()
        )
        totals = (now, c.succeeded, c.failed + c.timed_out, shell.assignments_sent, limited)
        last, self._last = self._last, totals
        waits, runs = self._latency_samples()
        metrics = self.metrics
        if metrics is not None and metrics.waiting_ages is not None:
            waits.extend(metrics.waiting_ages(now, WAITING_SAMPLES))
        if last is None:
            return None
        busy = slots = 0
        for a in sched.agents.values():
            busy += min(len(a.in_flight), a.slots)
            slots += a.slots
        return Measurement(
            start=last[0],
            end=now,
            succeeded=max(0, totals[1] - last[1]),
            failed=max(0, totals[2] - last[2]),
            attempts=max(0, totals[3] - last[3]),
            rate_limited=max(0, totals[4] - last[4]),
            p95_s=p95(waits) + p95(runs),
            queued=sched.queued(),
            saturated=slots > 0 and busy >= SATURATED * slots,
            throttled=sched.limiter.waiting,
            wait_samples=tuple(waits),
            run_samples=tuple(runs),
        )

    def _latency_samples(self) -> tuple[list[float], list[float]]:
        """Queue waits and run times of the tasks dispatched and finished since the last call,
        from the tap's latest samples (the tuner's latency is p95 wait plus p95 run: an upper
        bound of the p95 of their sum)."""
        metrics = self.metrics
        if metrics is None:
            return [], []
        waits: list[float] = []
        runs: list[float] = []
        for name, h in metrics.handlers.items():
            seen_wait, seen_run = self._seen.get(name, (0, 0))
            new_wait, new_run = h.wait.count - seen_wait, h.run.count - seen_run
            if new_wait > 0:
                waits.extend(list(h.wait_samples)[-min(new_wait, len(h.wait_samples)) :])
            if new_run > 0:
                runs.extend(list(h.run_samples)[-min(new_run, len(h.run_samples)) :])
            self._seen[name] = (h.wait.count, h.run.count)
        return waits, runs

    def knobs(self) -> dict[str, Knob]:
        """The knobs that apply now, with their bounds."""
        sched = self.shell.scheduler
        out: dict[str, Knob] = {}
        declared = sched.declared_slots()
        if declared > 0:
            value = min(sched.slot_limit or declared, declared)
            out[AGENT_SLOTS] = Knob(AGENT_SLOTS, value, 1, declared)
            top = max(1, declared)
            out[PREFETCH] = Knob(PREFETCH, min(sched.prefetch_floor, top), 0, top)
        gates = [g for g in sched.limiter.gates.values() if g.concurrency is not None]
        if gates:
            top = max(g.configured_concurrency() for g in gates)
            value = min(sched.limiter.max_concurrency or top, top)
            out[RATE_KEY_CONCURRENCY] = Knob(RATE_KEY_CONCURRENCY, value, 1, top)
        return out

    # ------------------------------------------------------------------ reporting

    def _report(self) -> None:
        """Log and export what this step decided: verdicts first, then new entries."""
        for seq, change in list(self._open.items()):
            if change.outcome is Outcome.TRYING:
                continue
            del self._open[seq]
            log.info(
                "tuner %s %s %d -> %d: %s (%s)",
                change.outcome.value,
                change.knob,
                change.old,
                change.new,
                change.verdict,
                change.after_detail or "no measurement",
            )
            self._span(change)
        for change in self.tuner.history:
            if change.seq <= self._reported:
                continue
            self._reported = change.seq
            verb = "suggests" if change.outcome is Outcome.SUGGESTED else "tries"
            log.info(
                "tuner %s %s %d -> %d: %s (%s)",
                verb,
                change.knob,
                change.old,
                change.new,
                change.reason,
                change.before_detail,
            )
            if change.outcome is Outcome.TRYING:
                self._open[change.seq] = change
            else:
                self._span(change)

    def _span(self, change: Change) -> None:
        """One ``deerflow.tuner`` span per change (from the trial to its verdict) or
        suggestion, in a trace of its own."""
        if self.emit_span is None:
            return
        start_ns = int(change.at * 1e9)
        end_ns = int((change.judged_at or change.at) * 1e9)
        attrs = (
            tracing.attr_str("deerflow.tuner.knob", change.knob),
            tracing.attr_int("deerflow.tuner.old", change.old),
            tracing.attr_int("deerflow.tuner.new", change.new),
            tracing.attr_str("deerflow.tuner.objective", change.objective),
            tracing.attr_str("deerflow.tuner.outcome", change.outcome.value),
        )
        first = "suggestion" if change.outcome is Outcome.SUGGESTED else "change"
        events = [
            tracing.event(
                f"tuner.{first}",
                start_ns,
                tracing.attr_str("deerflow.tuner.reason", change.reason, _E),
                tracing.attr_float("deerflow.tuner.before", change.before, _E),
                tracing.attr_str("deerflow.tuner.before_detail", change.before_detail, _E),
            )
        ]
        if change.outcome in (Outcome.KEPT, Outcome.REVERTED):
            after = [tracing.attr_str("deerflow.tuner.verdict", change.verdict, _E)]
            if change.after is not None:
                after.append(tracing.attr_float("deerflow.tuner.after", change.after, _E))
                after.append(
                    tracing.attr_str("deerflow.tuner.after_detail", change.after_detail, _E)
                )
            events.append(tracing.event(f"tuner.{change.outcome.value}", end_ns, *after))
        span = tracing.encode_span(
            tracing.new_trace_id(),
            tracing.new_span_id(),
            None,
            _HEAD,
            start_ns,
            end_ns,
            b"".join((*attrs, *events)),
        )
        self.emit_span(span)

    # ------------------------------------------------------------------ the picture

    def summary(self) -> dict[str, Any]:
        """The tuner's state as plain data (``/api/stats``, the dashboard)."""
        cfg = self.tuner.config
        return {
            "mode": cfg.mode.value,
            "objective": cfg.objective.value,
            "interval_s": cfg.interval_s,
            "converged": self.tuner.converged,
            "knobs": [
                {"name": k.name, "value": k.value, "floor": k.floor, "ceiling": k.ceiling}
                for k in self.knobs().values()
            ],
            "history": [c.to_dict() for c in self.tuner.history],
        }
