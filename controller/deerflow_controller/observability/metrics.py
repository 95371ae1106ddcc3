"""The controller's Prometheus metrics: what the event tap accumulates per handler, and the live
state of the core (counters, queue, agents, rate keys) read at scrape time.

Series (all prefixed ``deerflow_``):

- ``tasks_submitted_total``; ``tasks_finished_total{handler,state}``;
  ``task_retries_total{handler,kind}``; ``task_failures_total{kind}`` (terminal, by error kind)
- ``tasks{state}``: live tasks by state (pending, queued, throttled, dispatched, running)
- ``queue_depth{priority}``: ready tasks waiting for a slot, per priority
- ``task_schedule_to_start_seconds{handler}``: ready (in the queue, after any rate-limit wait
  or retry backoff) to dispatched
- ``task_run_seconds{handler}``: started (RUNNING, or DISPATCHED when the agent reported no start,
  as for sub-millisecond tasks) to the attempt's result
- ``jobs_active``, ``retained_output_bytes`` (outputs kept for dependents; docs/INPUTS.md),
  ``agents``, ``agent_*{agent}``: slots, in flight, running, CPU, memory,
  completed, draining, heartbeat age
- ``ratelimit_*{key}``: paced rate, concurrency limit, in flight, waiting, admitted, waited,
  429s, tokens, pause left
- ``tracing_spans_*_total``: spans exported, dropped and failed (when tracing is on)

- ``schedule_timeouts_total``, ``heartbeat_timeouts_total``, ``tasks_split_total``,
  ``attempts_moved_total`` (off lagging agents), ``stale_results_total`` (late results
  refused), ``prediction_error_ratio{handler}`` (MdAPE)
- ``circuit_state{key}`` (0 closed, 1 open, 2 half-open), ``circuit_trips_total{key}``,
  ``agent_quarantined{agent,handler}``
- ``cache_hits_total{layer}`` (exact, similarity, preload, inflight), ``cache_misses_total``,
  ``cache_skipped_total{reason}``, ``cache_hit_ratio``, ``cache_entries``, ``cache_bytes``,
  ``cache_evictions_total{tier}``, ``cache_preloads_total``, ``cache_preload_useful_ratio``
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from deerflow_common.prometheus import (
    MAX_SERIES_PER_FAMILY,
    OTHER,
    Histogram,
    MetricsText,
    process_metrics,
)
from deerflow_common.tracing import SpanSink
from deerflow_controller.core.model import Event, Job, Task, TaskState
from deerflow_controller.core.summaries import cache_summary

if TYPE_CHECKING:
    from deerflow_controller.service.shell import Shell

SAMPLES_PER_HANDLER = 2048
"""Recent tasks per handler kept for the dashboard's percentiles (the latest N tasks, not all
time: a percentile over hours hides what happens now)."""
RECENT_ERRORS = 50

_STATE_NAMES = {s: s.name for s in TaskState}
_SUCCEEDED = TaskState.SUCCEEDED


class HandlerMetrics:
    """One handler's histograms, outcome counts and latest durations (for percentiles)."""

    __slots__ = ("finished", "retries", "run", "run_samples", "wait", "wait_samples")

    def __init__(self) -> None:
        self.wait = Histogram()
        self.run = Histogram()
        self.wait_samples: collections.deque[float] = collections.deque(maxlen=SAMPLES_PER_HANDLER)
        self.run_samples: collections.deque[float] = collections.deque(maxlen=SAMPLES_PER_HANDLER)
        self.finished: dict[str, int] = {}
        """Terminal state name -> tasks."""
        self.retries: dict[str, int] = {}
        """Error kind name -> retries."""


class TaskMetrics:
    """Accumulated from task events by the tap; read by /metrics, /api/stats and top."""

    def __init__(self) -> None:
        self.pending = 0
        self.queue_by_priority: dict[int, int] = {}
        self.handlers: dict[str, HandlerMetrics] = {}
        self.failures_by_kind: dict[str, int] = {}
        self.recent_errors: collections.deque[dict[str, object]] = collections.deque(
            maxlen=RECENT_ERRORS
        )
        self.waiting_ages: Callable[[float, int], list[float]] | None = None
        """Set by the tap that feeds these metrics: how long each task waiting for an agent
        right now has waited so far (``now``, at most ``limit`` of them)."""

    def handler(self, name: str) -> HandlerMetrics:
        """The metrics of handler ``name``; past ``MAX_SERIES_PER_FAMILY`` handlers, those of
        ``OTHER``, which sums every handler named after (tasks may name any handler, and each
        costs about 40 KB of samples)."""
        h = self.handlers.get(name)
        if h is None:
            if len(self.handlers) >= MAX_SERIES_PER_FAMILY - 1:
                name = OTHER
                h = self.handlers.get(name)
                if h is not None:
                    return h
            h = self.handlers[name] = HandlerMetrics()
        return h

    # ------------------------------------------------------------------ fed by the tap

    def dispatched(self, items: Sequence[tuple[Task, Event, float | None]]) -> None:
        """Tasks dispatched: their wait from ready to dispatch; for a task held THROTTLED
        first (its rate keys, or a slot its keys had room for), from when the hold began (the
        third item), so that rate-keyed work's wait for a slot is counted."""
        handlers = self.handlers
        name = ""
        h = None
        for task, ev, held in items:
            if task.spec.handler != name or h is None:
                name = task.spec.handler
                h = handlers.get(name) or self.handler(name)
            since = task.ready_at if held is None or held > task.ready_at else held
            wait_s = ev.time - since
            if wait_s < 0.0:
                wait_s = 0.0  # requeued within the same loop turn
            h.wait.observe(wait_s)
            h.wait_samples.append(wait_s)

    def finished(self, job: Job, items: Sequence[tuple[Task, Event, float | None]]) -> None:
        """Tasks that reached a terminal state; ``began``: start of their last attempt, if any."""
        handlers = self.handlers
        name = ""
        h = None
        for task, ev, began in items:
            if task.spec.handler != name or h is None:
                name = task.spec.handler
                h = handlers.get(name) or self.handler(name)
            if began is not None:
                run_s = ev.time - began
                h.run.observe(run_s)
                h.run_samples.append(run_s)
            state = _STATE_NAMES[ev.state]
            h.finished[state] = h.finished.get(state, 0) + 1
            if ev.state is not _SUCCEEDED:
                kind = ev.error.kind.name if ev.error is not None else "UNKNOWN"
                self.failures_by_kind[kind] = self.failures_by_kind.get(kind, 0) + 1
                self._remember(job, task, ev, kind)

    def retried(self, job: Job, task: Task, ev: Event, began: float | None) -> None:
        h = self.handler(task.spec.handler)
        if began is not None:
            run_s = ev.time - began
            h.run.observe(run_s)
            h.run_samples.append(run_s)
        kind = ev.error.kind.name if ev.error is not None else "UNKNOWN"
        h.retries[kind] = h.retries.get(kind, 0) + 1
        self._remember(job, task, ev, kind)

    def _remember(self, job: Job, task: Task, ev: Event, kind: str) -> None:
        message = ev.error.message if ev.error is not None else ""
        self.recent_errors.append(
            {
                "time": ev.time,
                "job": job.id,
                "task": ev.task_id,
                "handler": task.spec.handler,
                "state": _STATE_NAMES[ev.state],
                "attempt": ev.attempt,
                "agent": ev.agent_id,
                "kind": kind,
                "message": message[:300],
            }
        )

    def retries_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for h in self.handlers.values():
            for kind, n in h.retries.items():
                out[kind] = out.get(kind, 0) + n
        return out


def live_states(shell: Shell, metrics: TaskMetrics | None) -> dict[str, int]:
    """Live tasks by state, from the core's own counts (agents' in-flight tasks are bounded by
    their slots, so counting them is cheap)."""
    sched = shell.scheduler
    dispatched = running = 0
    for agent in sched.agents.values():
        for task in agent.in_flight.values():
            if task.state == TaskState.RUNNING:
                running += 1
            else:
                dispatched += 1
    return {
        "pending": metrics.pending if metrics is not None else 0,
        "queued": sched.queued(),
        "throttled": sched.limiter.waiting,
        "dispatched": dispatched,
        "running": running,
    }


def render(
    shell: Shell, metrics: TaskMetrics, sink: SpanSink | None, now: float | None = None
) -> str:
    """The whole exposition, read from live state. O(agents + rate keys + handlers)."""
    now = shell.clock() if now is None else now
    sched = shell.scheduler
    c = sched.counters
    out = MetricsText()
    out.gauge(
        "deerflow_controller_info",
        "This controller (value 1); its id and epoch as labels.",
        [({"controller_id": shell.config.controller_id, "epoch": str(shell.config.epoch)}, 1)],
    )
    out.counter(
        "deerflow_tasks_submitted_total", "Tasks accepted in submitted jobs.", [(None, c.submitted)]
    )
    out.counter(
        "deerflow_tasks_finished_total",
        "Tasks that reached a terminal state, by handler and state.",
        [
            ({"handler": name, "state": state}, n)
            for name, h in sorted(metrics.handlers.items())
            for state, n in sorted(h.finished.items())
        ],
    )
    out.counter(
        "deerflow_task_retries_total",
        "Attempts that ended badly and were retried, by handler and error kind.",
        [
            ({"handler": name, "kind": kind}, n)
            for name, h in sorted(metrics.handlers.items())
            for kind, n in sorted(h.retries.items())
        ],
    )
    out.counter(
        "deerflow_task_failures_total",
        "Tasks that ended FAILED, CANCELLED or TIMED_OUT, by error kind.",
        [({"kind": k}, n) for k, n in sorted(metrics.failures_by_kind.items())],
    )
    out.gauge(
        "deerflow_tasks",
        "Live tasks by state.",
        [({"state": s}, n) for s, n in live_states(shell, metrics).items()],
    )
    out.gauge(
        "deerflow_queue_depth",
        "Ready tasks waiting for a free slot, by priority.",
        [({"priority": str(p)}, n) for p, n in sorted(metrics.queue_by_priority.items()) if n],
    )
    out.histogram(
        "deerflow_task_schedule_to_start_seconds",
        "Seconds from ready (queued, or held by its rate keys) to dispatch to an agent, "
        "per handler.",
        "handler",
        {name: h.wait for name, h in metrics.handlers.items()},
    )
    out.histogram(
        "deerflow_task_run_seconds",
        "Seconds from an attempt's start (or dispatch, when no start was reported) to its "
        "result, per handler.",
        "handler",
        {name: h.run for name, h in metrics.handlers.items()},
    )
    out.gauge(
        "deerflow_jobs_active",
        "Jobs with unfinished tasks.",
        [(None, sum(1 for j in sched.jobs.values() if not j.done))],
    )
    out.gauge(
        "deerflow_retained_output_bytes",
        "Bytes of task outputs kept for the dependents that read them (inputs), all jobs.",
        [(None, sum(j.retained_bytes for j in sched.jobs.values()))],
    )
    _agents(out, shell, now)
    _rate_keys(out, shell, now)
    _scheduling(out, shell, now)
    _cache(out, shell)
    if sink is not None:
        out.counter(
            "deerflow_tracing_spans_exported_total", "Spans exported.", [(None, sink.exported)]
        )
        out.counter(
            "deerflow_tracing_spans_dropped_total",
            "Spans dropped because the export queue was full.",
            [(None, sink.dropped)],
        )
        out.counter(
            "deerflow_tracing_spans_failed_total",
            "Spans the backend did not accept.",
            [(None, sink.failed)],
        )
    process_metrics(out)
    return out.render()


def _agents(out: MetricsText, shell: Shell, now: float) -> None:
    agents = sorted(shell.scheduler.agents.values(), key=lambda a: a.id)
    out.gauge("deerflow_agents", "Connected agents.", [(None, len(agents))])

    def per_agent(name: str, help_text: str, values: Iterable[tuple[str, float]]) -> None:
        out.gauge(name, help_text, [({"agent": a}, v) for a, v in values])

    per_agent("deerflow_agent_slots", "Slots the agent offers.", [(a.id, a.slots) for a in agents])
    per_agent(
        "deerflow_agent_in_flight",
        "Attempts the controller has on the agent (running or prefetched).",
        [(a.id, len(a.in_flight)) for a in agents],
    )
    per_agent(
        "deerflow_agent_running",
        "Attempts running, from the last heartbeat.",
        [(a.id, a.running) for a in agents],
    )
    per_agent(
        "deerflow_agent_cpu_percent",
        "Machine CPU use (every process on the agent's machine), from the last heartbeat.",
        [(a.id, a.cpu_percent) for a in agents],
    )
    per_agent(
        "deerflow_agent_process_cpu_percent",
        "CPU use of the agent's own processes, percent of its machine, from the last heartbeat.",
        [(a.id, a.process_cpu_percent) for a in agents],
    )
    per_agent(
        "deerflow_agent_memory_percent",
        "Machine memory use, from the last heartbeat.",
        [(a.id, a.memory_percent) for a in agents],
    )
    per_agent(
        "deerflow_agent_draining",
        "1 while the agent drains.",
        [(a.id, float(a.draining)) for a in agents],
    )
    per_agent(
        "deerflow_agent_heartbeat_age_seconds",
        "Seconds since the agent last reported.",
        [(a.id, max(0.0, now - a.last_heartbeat)) for a in agents],
    )
    out.counter(
        "deerflow_agent_completed_total",
        "Attempt results the agent reported since it connected.",
        [({"agent": a.id}, a.completed) for a in agents],
    )


def _rate_keys(out: MetricsText, shell: Shell, now: float) -> None:
    gates = sorted(shell.scheduler.limiter.gates.items())

    def per_key(name: str, help_text: str, values: Iterable[tuple[str, float]]) -> None:
        out.gauge(name, help_text, [({"key": k}, v) for k, v in values])

    def per_key_total(name: str, help_text: str, values: Iterable[tuple[str, float]]) -> None:
        out.counter(name, help_text, [({"key": k}, v) for k, v in values])

    per_key(
        "deerflow_ratelimit_paced_rps",
        "Requests per second the key is paced at (0 = unlimited).",
        [(k, g.request_rate() or 0.0) for k, g in gates],
    )
    per_key(
        "deerflow_ratelimit_concurrency_limit",
        "Current (adaptive) concurrency limit of the key (0 = unlimited).",
        [(k, g.concurrency.value if g.concurrency is not None else 0) for k, g in gates],
    )
    per_key(
        "deerflow_ratelimit_in_flight",
        "Tasks holding a slot of the key.",
        [(k, g.in_flight) for k, g in gates],
    )
    per_key(
        "deerflow_ratelimit_waiting",
        "Tasks THROTTLED on the key.",
        [(k, g.waiting) for k, g in gates],
    )
    per_key(
        "deerflow_ratelimit_paused_seconds",
        "Seconds left of a Retry-After pause.",
        [(k, max(0.0, g.paused_until - now)) for k, g in gates],
    )
    per_key_total(
        "deerflow_ratelimit_admitted_total",
        "Tasks admitted on the key.",
        [(k, g.stats.admitted) for k, g in gates],
    )
    per_key_total(
        "deerflow_ratelimit_waited_total",
        "Tasks that had to wait on the key.",
        [(k, g.stats.waited) for k, g in gates],
    )
    per_key_total(
        "deerflow_ratelimit_rate_limited_total",
        "429 answers the provider gave for the key.",
        [(k, g.stats.rate_limited) for k, g in gates],
    )
    per_key_total(
        "deerflow_ratelimit_tokens_total",
        "Tokens reported used on the key.",
        [(k, g.stats.tokens) for k, g in gates],
    )


def _scheduling(out: MetricsText, shell: Shell, now: float) -> None:
    sched = shell.scheduler
    c = sched.counters
    out.counter(
        "deerflow_schedule_timeouts_total",
        "Tasks that timed out waiting to start (schedule-to-start).",
        [(None, c.schedule_timeouts)],
    )
    out.counter(
        "deerflow_heartbeat_timeouts_total",
        "Attempts stopped for reporting no progress within their heartbeat timeout.",
        [(None, c.heartbeat_timeouts)],
    )
    out.counter(
        "deerflow_tasks_split_total",
        "Tasks the decomposer split into parts.",
        [(None, c.split_tasks)],
    )
    out.counter(
        "deerflow_attempts_moved_total",
        "Unstarted attempts moved off a lagging agent to an idle one.",
        [(None, c.stolen)],
    )
    out.counter(
        "deerflow_stale_results_total",
        "Attempt results refused because their task had finished or moved to a newer attempt "
        "(a lost agent's late results, the loser of a race).",
        [(None, c.stale_results)],
    )
    out.gauge(
        "deerflow_prediction_error_ratio",
        "Median absolute percentage error of recent run-time predictions, per handler.",
        [({"handler": h}, statistics.median(e)) for h, e in sorted(sched.accuracy.items()) if e],
    )
    snapshot = sorted(sched.breakers.snapshot().items())
    out.gauge(
        "deerflow_circuit_state",
        "Circuit breaker per rate key or handler: 0 closed, 1 open, 2 half-open.",
        [({"key": k}, int(v.state)) for k, v in snapshot],
    )
    out.counter(
        "deerflow_circuit_trips_total",
        "Times each circuit opened.",
        [({"key": k}, v.trips) for k, v in snapshot],
    )
    out.gauge(
        "deerflow_agent_quarantined",
        "1 while an agent is held out of a handler for failing where its peers succeed.",
        [({"agent": a, "handler": h}, 1) for (a, h) in sorted(sched.quarantine_reasons)],
    )


def _cache(out: MetricsText, shell: Shell) -> None:
    st = cache_summary(shell.scheduler)
    if not st["enabled"]:
        return
    out.counter(
        "deerflow_cache_hits_total",
        "Tasks answered without running, by layer.",
        [({"layer": k}, v) for k, v in st["hits"].items()],
    )
    out.counter("deerflow_cache_misses_total", "Cache lookups that missed.", [(None, st["misses"])])
    out.counter(
        "deerflow_cache_skipped_total",
        "Lookups that bypassed the cache, by reason (too_large and unhashable are bad input).",
        [({"reason": r}, n) for r, n in st["skips"].items()],
    )
    out.gauge("deerflow_cache_hit_ratio", "Hits over lookups.", [(None, st["hit_rate"])])
    out.gauge("deerflow_cache_entries", "Entries held.", [(None, st["entries"])])
    out.gauge("deerflow_cache_bytes", "Bytes held (outputs and overhead).", [(None, st["bytes"])])
    out.counter(
        "deerflow_cache_evictions_total",
        "Entries evicted to stay within the byte bound, by tier.",
        [({"tier": t}, n) for t, n in st["evictions"].items()],
    )
    out.counter(
        "deerflow_cache_preloads_total",
        "Speculative tasks the preloader proposed.",
        [(None, st["preloads"])],
    )
    out.gauge(
        "deerflow_cache_preload_useful_ratio",
        "Share of preloaded entries later used.",
        [(None, st["preload_useful_ratio"])],
    )
