"""The numbers the dashboard, ``/api/stats`` and ``deerflow top`` show: one JSON-ready snapshot
of the controller, with a short history sampled once a second for rates and charts.

A snapshot reads live state (O(agents + rate keys + handlers)) plus the recent-task samples the
tap keeps; building one costs about a millisecond, so pollers every second are fine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deerflow_controller.core.summaries import cache_summary, circuit_summary, quarantine_summary
from deerflow_controller.observability.metrics import TaskMetrics, live_states
from deerflow_controller.observability.suggestions import suggest

if TYPE_CHECKING:
    from deerflow_common.tracing import SpanSink
    from deerflow_controller.service.shell import Shell

HISTORY_S = 600
WINDOW_S = 60.0
"""The window suggestions and rates are computed over."""
SERIES_POINTS = 120


@dataclass(slots=True)
class Sample:
    """Totals at one moment; rates come from the difference of two samples."""

    time: float
    completed: int
    submitted: int
    failed: int
    retries: int
    queued: int
    throttled: int
    in_flight: int
    busy: int
    """Slots in use: each agent's in-flight attempts, at most its slots."""
    slots: int
    rate_limited: dict[str, int] = field(default_factory=dict)
    agent_load: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """Agent id -> (machine CPU %, machine memory %, the agent's own processes' CPU %) from its
    last heartbeat."""


class StatsHistory:
    """Samples the controller once a second (while started) and keeps ``HISTORY_S`` of them."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.samples: collections.deque[Sample] = collections.deque(maxlen=HISTORY_S)
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> Sample:
        shell = self.shell
        sched = shell.scheduler
        c = sched.counters
        busy = slots = in_flight = 0
        for a in sched.agents.values():
            n = len(a.in_flight)
            in_flight += n
            busy += min(n, a.slots)
            slots += a.slots
        s = Sample(
            time=shell.clock(),
            completed=c.succeeded + c.failed + c.cancelled + c.timed_out,
            submitted=c.submitted,
            failed=c.failed + c.timed_out,
            retries=c.retries,
            queued=sched.queued(),
            throttled=sched.limiter.waiting,
            in_flight=in_flight,
            busy=busy,
            slots=slots,
            rate_limited={k: g.stats.rate_limited for k, g in sched.limiter.gates.items()},
            agent_load={
                a.id: (a.cpu_percent, a.memory_percent, a.process_cpu_percent)
                for a in sched.agents.values()
            },
        )
        self.samples.append(s)
        return s

    def start(self) -> None:
        self.sample()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.sample()

    def window(self, seconds: float = WINDOW_S) -> dict[str, Any]:
        """Changes over the last ``seconds`` (or as much history as there is)."""
        samples = self.samples
        if not samples:
            return {"seconds": 0.0}
        last = samples[-1]
        first = last
        utilisation = []
        utilisation_queued = []
        max_queued = 0
        load: dict[str, list[tuple[float, float, float]]] = {}
        for s in reversed(samples):
            if last.time - s.time > seconds:
                break
            first = s
            if s.slots:
                utilisation.append(s.busy / s.slots)
                if s.queued:
                    utilisation_queued.append(s.busy / s.slots)
            max_queued = max(max_queued, s.queued + s.throttled)
            for agent_id, figures in s.agent_load.items():
                load.setdefault(agent_id, []).append(figures)
        span = last.time - first.time
        return {
            "seconds": round(span, 1),
            "completed": last.completed - first.completed,
            "submitted": last.submitted - first.submitted,
            "failed": last.failed - first.failed,
            "retries": last.retries - first.retries,
            "completed_per_s": round((last.completed - first.completed) / span, 2) if span else 0,
            "submitted_per_s": round((last.submitted - first.submitted) / span, 2) if span else 0,
            "utilisation": round(sum(utilisation) / len(utilisation), 4) if utilisation else 0.0,
            # Use while tasks waited QUEUED for a slot: whether agents were full when work
            # waited, which the plain average blurs with idle stretches (before a job, after it).
            "utilisation_queued": (
                round(sum(utilisation_queued) / len(utilisation_queued), 4)
                if utilisation_queued
                else None
            ),
            "max_queued": max_queued,
            "rate_limited": {
                k: n - first.rate_limited.get(k, 0)
                for k, n in last.rate_limited.items()
                if n - first.rate_limited.get(k, 0) > 0
            },
            "agent_load": {
                agent_id: {
                    "cpu_percent": round(sum(c for c, _, _ in v) / len(v), 1),
                    "memory_percent": round(sum(m for _, m, _ in v) / len(v), 1),
                    "process_cpu_percent": round(sum(o for _, _, o in v) / len(v), 1),
                }
                for agent_id, v in load.items()
            },
        }

    def series(self, points: int = SERIES_POINTS) -> dict[str, list[float]]:
        """Per-second values for charts: completions per second, queue, in flight, use."""
        samples = list(self.samples)[-(points + 1) :]
        out: dict[str, list[float]] = {
            "time": [],
            "completed_per_s": [],
            "queued": [],
            "throttled": [],
            "in_flight": [],
            "utilisation": [],
        }
        for prev, s in itertools.pairwise(samples):
            dt = s.time - prev.time
            out["time"].append(round(s.time, 3))
            out["completed_per_s"].append(
                round((s.completed - prev.completed) / dt, 2) if dt else 0
            )
            out["queued"].append(s.queued)
            out["throttled"].append(s.throttled)
            out["in_flight"].append(s.in_flight)
            out["utilisation"].append(round(s.busy / s.slots, 4) if s.slots else 0.0)
        return out


def percentiles(values: collections.abc.Iterable[float]) -> dict[str, float | int | None]:
    data = sorted(values)
    n = len(data)
    if not n:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}

    def rank(q: float) -> float:
        return round(data[min(n - 1, max(0, math.ceil(q * n) - 1))], 6)

    return {"n": n, "p50": rank(0.5), "p95": rank(0.95), "p99": rank(0.99), "max": data[-1]}


def _latency(metrics: TaskMetrics | None) -> dict[str, Any]:
    """Percentiles of the latest tasks per handler: ``wait`` (ready to dispatch) and ``run``
    (start to result)."""
    if metrics is None:
        return {"handlers": {}, "all": {}}
    handlers = {}
    all_wait: list[float] = []
    all_run: list[float] = []
    for name, h in sorted(metrics.handlers.items()):
        if not h.wait_samples and not h.run_samples:
            continue  # a handler whose tasks never ran (unknown handler)
        handlers[name] = {"wait": percentiles(h.wait_samples), "run": percentiles(h.run_samples)}
        all_wait.extend(h.wait_samples)
        all_run.extend(h.run_samples)
    return {
        "handlers": handlers,
        "all": {"wait": percentiles(all_wait), "run": percentiles(all_run)},
    }


def snapshot(
    shell: Shell,
    metrics: TaskMetrics | None,
    history: StatsHistory,
    sink: SpanSink | None,
    *,
    serving: bool,
    tuner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the dashboard shows, as plain JSON-able data (see module doc)."""
    sched = shell.scheduler
    c = sched.counters
    now = shell.clock()
    agents = []
    for a in sorted(sched.agents.values(), key=lambda a: a.id):
        agents.append(
            {
                "id": a.id,
                "slots": a.slots,
                "in_flight": len(a.in_flight),
                "running": a.running,
                "utilisation": round(min(len(a.in_flight), a.slots) / a.slots, 4),
                "cpu_percent": round(a.cpu_percent, 1),
                "process_cpu_percent": round(a.process_cpu_percent, 1),
                "memory_percent": round(a.memory_percent, 1),
                "completed": a.completed,
                "draining": a.draining,
                "heartbeat_age_s": round(max(0.0, now - a.last_heartbeat), 2),
                "handlers": sorted(a.handlers),
                "labels": dict(a.labels),
            }
        )
    rate_keys = []
    for key, gate in sorted(sched.limiter.gates.items()):
        conc = gate.concurrency
        rate_keys.append(
            {
                "key": key,
                "paced_rps": round(gate.request_rate() or 0.0, 3),
                "concurrency_limit": conc.value if conc is not None else 0,
                "in_flight": gate.in_flight,
                "waiting": gate.waiting,
                "admitted": gate.stats.admitted,
                "waited": gate.stats.waited,
                "rate_limited": gate.stats.rate_limited,
                "tokens": gate.stats.tokens,
                "paused_for_s": round(max(0.0, gate.paused_until - now), 2),
            }
        )
    retries_by_kind = metrics.retries_by_kind() if metrics is not None else {}
    out: dict[str, Any] = {
        "controller": {
            "id": shell.config.controller_id,
            "epoch": shell.config.epoch,
            "uptime_s": round(now - shell.started_at, 1),
            "serving": serving,
            "time": now,
        },
        "tasks": {
            "submitted": c.submitted,
            "succeeded": c.succeeded,
            "failed": c.failed,
            "cancelled": c.cancelled,
            "timed_out": c.timed_out,
            "retries": c.retries,
            "live": live_states(shell, metrics),
            "queue_by_priority": {
                str(p): n
                for p, n in sorted((metrics.queue_by_priority if metrics else {}).items())
                if n
            },
        },
        "jobs_active": sum(1 for j in sched.jobs.values() if not j.done),
        "throughput": {
            "completed_per_s": round(shell.completed_per_s(), 2),
            "series": history.series(),
        },
        "window": history.window(),
        "latency": _latency(metrics),
        "agents": agents,
        "rate_keys": rate_keys,
        "errors": {
            "failures_by_kind": dict(sorted((metrics.failures_by_kind if metrics else {}).items())),
            "retries_by_kind": dict(sorted(retries_by_kind.items())),
            "recent": list(reversed(metrics.recent_errors)) if metrics else [],
        },
        "tracing": {
            "enabled": sink is not None,
            "exported": sink.exported if sink else 0,
            "dropped": sink.dropped if sink else 0,
            "failed": sink.failed if sink else 0,
        },
        "cache": cache_summary(sched),
        "circuits": circuit_summary(sched, now),
        "quarantined": quarantine_summary(sched, now),
    }
    if tuner is not None:
        out["tuner"] = tuner
    out["suggestions"] = [s.to_dict() for s in suggest(out)]
    return out
