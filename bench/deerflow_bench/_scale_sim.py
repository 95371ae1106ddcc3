"""The scheduling core simulated at scale (issue #19, items 4 and 5): ``deerflow bench scale``'s
``simulation`` and ``partitioned`` sections.

The controller's :class:`~deerflow_controller.core.scheduler.Scheduler` (the core with every
policy the daemon installs) runs in this process on a fake clock, with simulated agents: no
gRPC, no event loop, no journal, so what is measured is the decisions alone.

- ``simulate``: ``tasks`` tasks in jobs of ``job_size`` are submitted with no agent connected
  (all queue: the memory per queued task is the RSS growth over the submit), then ``agents``
  agents of ``slots`` slots join and every task runs for ``task_s`` simulated seconds. Each
  phase reports its decisions and decisions per wall second: ``submit`` (tasks accepted),
  ``join`` (agents registered and their first assignments), ``drain`` (results applied, each
  refilling its agent's credit with the next assignment).
- ``partitioned``: ``groups`` independent cores on the same fake clock, jobs placed by
  :class:`~deerflow_common.partition.PartitionRing` on their id, each group with ``agents``
  agents of its own (the per-group load stays that of one controller; the whole grows with the
  groups). Per group: jobs, tasks, decisions and the wall seconds spent in its calls; overall:
  decisions per simulated second and, assuming each group on its own machine, projected
  decisions per wall second (total decisions / the busiest group's seconds). On one machine the
  groups take turns on one core: the per-group work is measured, the parallelism is not.

Silent agents are never declared dead here (``agent_silence_s`` is raised): the simulated
agents send no heartbeats, their results are their only sign of life.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field, replace
from typing import Any

import psutil

from deerflow_common.partition import PartitionRing
from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.model import TaskSpec
from deerflow_controller.core.scheduler import AttemptResult, Scheduler

__all__ = ["SimGroup", "partitioned", "simulate"]

_DONE = b"ok"


def _config(tasks: int, jobs: int) -> SchedulerConfig:
    """The daemon's defaults, with the admission limits raised to hold every simulated task
    (they are the shell's checks; stated so the numbers are not read as the defaults')."""
    return replace(
        SchedulerConfig(),
        max_queued_tasks=max(tasks, 1),
        max_queued_tasks_per_tenant=max(tasks, 1),
        max_jobs_per_tenant=max(jobs, 1),
        agent_silence_s=1e12,
    )


def _specs(job_size: int) -> list[TaskSpec]:
    return [TaskSpec(id=f"t{i}", handler="echo") for i in range(job_size)]


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


@dataclass
class SimGroup:
    """One core and its simulated agents; counts its decisions and the wall time of its calls."""

    name: str
    core: Scheduler
    agents: list[str] = field(default_factory=list)
    jobs: int = 0
    tasks: int = 0
    submitted: int = 0
    assigned: int = 0
    results: int = 0
    busy_s: float = 0.0
    holding: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)
    """Attempts each agent was given and has not reported yet."""

    @property
    def decisions(self) -> int:
        return self.submitted + self.assigned + self.results

    def submit(self, job_id: str, specs: list[TaskSpec], now: float) -> None:
        t0 = time.perf_counter()
        self.core.submit(job_id, job_id, specs, now)
        self._collect()
        self.busy_s += time.perf_counter() - t0
        self.jobs += 1
        self.tasks += len(specs)
        self.submitted += len(specs)

    def join(self, agent_id: str, slots: int, now: float) -> None:
        t0 = time.perf_counter()
        self.core.agent_joined(agent_id, ["echo"], slots, now)
        self._collect()
        self.busy_s += time.perf_counter() - t0
        self.agents.append(agent_id)

    def step(self, now: float) -> int:
        """Every agent reports, at ``now``, the attempts it held since the last step (started
        and succeeded), and timers due by ``now`` fire. Returns the results applied."""
        t0 = time.perf_counter()
        core = self.core
        due = core.next_timer()
        while due is not None and due <= now:
            core.tick(due)
            due = core.next_timer()
        holding, self.holding = self.holding, {}
        applied = 0
        for agent_id, keys in holding.items():
            core.started(agent_id, keys, now)
            core.finished(agent_id, [AttemptResult(k, ok=True, output=_DONE) for k in keys], now)
            applied += len(keys)
        self._collect()
        self.busy_s += time.perf_counter() - t0
        self.results += applied
        return applied

    def _collect(self) -> None:
        out = self.core.take()
        for agent_id, tasks in out.assignments.items():
            self.holding.setdefault(agent_id, []).extend(t.key for t in tasks)
            self.assigned += len(tasks)

    def unfinished(self) -> int:
        c = self.core.counters
        return c.submitted - c.succeeded - c.failed - c.cancelled - c.timed_out


def _phase(decisions: int, seconds: float) -> dict[str, Any]:
    return {
        "decisions": decisions,
        "seconds": round(seconds, 4),
        "decisions_per_s": round(decisions / seconds, 1) if seconds > 0 else None,
    }


def simulate(
    *, agents: int, slots: int, tasks: int, job_size: int, task_s: float = 1.0
) -> dict[str, Any]:
    """One core, ``tasks`` queued then run on ``agents`` x ``slots`` (see the module docstring).
    Takes a few minutes at 10,000 agents and 1,000,000 tasks on one core."""
    n_jobs = -(-tasks // job_size)
    group = SimGroup("g0", Scheduler(_config(tasks, n_jobs), seed=7))
    gc.collect()
    rss0 = _rss()
    now = 0.0
    t0 = time.perf_counter()
    left = tasks
    for j in range(n_jobs):
        size = min(job_size, left)
        group.submit(f"job-{j}", _specs(size), now)
        left -= size
    submit_s = time.perf_counter() - t0
    queued = group.core.queued()
    gc.collect()
    rss_queued = _rss()
    busy_before = group.busy_s
    for a in range(agents):
        group.join(f"agent-{a}", slots, now)
    join_s = group.busy_s - busy_before
    joined_assignments = group.assigned
    busy_before = group.busy_s
    steps = 0
    while group.holding:
        now += task_s
        group.step(now)
        steps += 1
    drain_s = group.busy_s - busy_before
    c = group.core.counters
    return {
        "agents": agents,
        "slots": slots,
        "tasks": tasks,
        "jobs": n_jobs,
        "job_size": job_size,
        "task_s": task_s,
        "queued_before_agents": queued,
        "submit": _phase(group.submitted, submit_s),
        "join": _phase(agents + joined_assignments, join_s),
        "drain": _phase(group.results + group.assigned - joined_assignments, drain_s),
        "decisions": group.decisions,
        "wall_s": round(group.busy_s, 4),
        "decisions_per_s": round(group.decisions / group.busy_s, 1) if group.busy_s else None,
        "simulated_s": now,
        "steps": steps,
        "succeeded": c.succeeded,
        "unfinished": group.unfinished(),
        "rss_growth_mb_queued": round((rss_queued - rss0) / (1 << 20), 1),
        "bytes_per_queued_task": round((rss_queued - rss0) / max(1, tasks)),
    }


def partitioned(
    *, groups: int, agents: int, slots: int, tasks: int, job_size: int, task_s: float = 1.0
) -> dict[str, Any]:
    """``groups`` cores, each with ``agents`` agents and about ``tasks`` tasks (jobs placed by
    the ring, so the split is only about even); all run to the end on one fake clock."""
    ring = PartitionRing([f"g{i}" for i in range(groups)])
    total = tasks * groups
    n_jobs = -(-total // job_size)
    sims = {
        g: SimGroup(g, Scheduler(_config(total, n_jobs), seed=7 + i))
        for i, g in enumerate(ring.groups)
    }
    now = 0.0
    for sim in sims.values():
        for a in range(agents):
            sim.join(f"{sim.name}-agent-{a}", slots, now)
    left = total
    for j in range(n_jobs):
        size = min(job_size, left)
        job_id = f"job-{j}"
        sims[ring.owner(job_id)].submit(job_id, _specs(size), now)
        left -= size
    steps = 0
    while any(s.holding for s in sims.values()):
        now += task_s
        for sim in sims.values():
            sim.step(now)
        steps += 1
    decisions = sum(s.decisions for s in sims.values())
    busiest = max(s.busy_s for s in sims.values())
    return {
        "groups": groups,
        "agents_per_group": agents,
        "slots": slots,
        "tasks": total,
        "jobs": n_jobs,
        "job_size": job_size,
        "task_s": task_s,
        "per_group": [
            {
                "group": s.name,
                "jobs": s.jobs,
                "tasks": s.tasks,
                "decisions": s.decisions,
                "busy_s": round(s.busy_s, 4),
                "decisions_per_s": round(s.decisions / s.busy_s, 1) if s.busy_s else None,
                "succeeded": s.core.counters.succeeded,
                "unfinished": s.unfinished(),
            }
            for s in sims.values()
        ],
        "decisions": decisions,
        "simulated_s": now,
        "steps": steps,
        "decisions_per_simulated_s": round(decisions / now, 1) if now else None,
        "wall_s": round(sum(s.busy_s for s in sims.values()), 4),
        "projected_decisions_per_s": round(decisions / busiest, 1) if busiest else None,
    }
