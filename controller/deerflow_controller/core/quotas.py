"""How much unfinished work the controller holds, per tenant and in all, and the refusal of a
job that would go over (issue #17, finding 5).

Each unfinished task holds its spec, payload and state in memory until it ends, so a client
submitting faster than the agents run could grow the controller without bound. The core
counts unfinished tasks per tenant (``TaskSpec.tenant``: each task against its own) and in
all, and unfinished jobs per tenant (a job counts against the tenant of its first task: today
a job's tasks name it, authentication will fill it from the client's token). A job that would
go over a limit is refused whole, before anything of it is accepted, with RESOURCE_EXHAUSTED
and a sentence saying to retry when some finish; nothing already accepted is touched.

Finished jobs are not counted: they are kept for ``job_retention_s`` and then forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.model import Job, Task, TaskSpec
from deerflow_controller.core.validation import quote


def job_tenant(specs: Sequence[TaskSpec]) -> str:
    """The tenant a job counts against: its first task's ("" when none is named)."""
    return specs[0].tenant if specs else ""


@dataclass(slots=True)
class Quotas:
    """Unfinished tasks per tenant and in all, unfinished jobs per tenant."""

    config: SchedulerConfig
    tasks: int = 0
    tasks_by_tenant: dict[str, int] = field(default_factory=dict)
    jobs_by_tenant: dict[str, int] = field(default_factory=dict)

    def problem(self, specs: Sequence[TaskSpec]) -> str | None:
        """Why the job of ``specs`` cannot be accepted now (one sentence), or None."""
        cfg = self.config
        n = len(specs)
        if self.tasks + n > cfg.max_queued_tasks:
            return (
                f"the controller holds {self.tasks} unfinished tasks and this job adds {n}, over "
                f"its limit of {cfg.max_queued_tasks} (--max-queued-tasks); retry when some "
                "finish"
            )
        per_tenant: dict[str, int] = {}
        for spec in specs:
            per_tenant[spec.tenant] = per_tenant.get(spec.tenant, 0) + 1
        limit = cfg.max_queued_tasks_per_tenant
        for tenant, count in per_tenant.items():
            held = self.tasks_by_tenant.get(tenant, 0)
            if held + count > limit:
                return (
                    f"tenant {quote(tenant)} has {held} unfinished tasks and this job adds "
                    f"{count}, over the limit of {limit} per tenant "
                    "(--max-queued-tasks-per-tenant); retry when some finish"
                )
        tenant = job_tenant(specs)
        held = self.jobs_by_tenant.get(tenant, 0)
        if held >= cfg.max_jobs_per_tenant:
            return (
                f"tenant {quote(tenant)} has {held} unfinished jobs, the limit per tenant "
                f"(--max-jobs-per-tenant {cfg.max_jobs_per_tenant}); retry when some finish"
            )
        return None

    def job_added(self, job: Job) -> None:
        """Count a job just built, all of its tasks unfinished."""
        by_tenant = self.tasks_by_tenant
        for task in job.tasks.values():
            tenant = task.spec.tenant
            by_tenant[tenant] = by_tenant.get(tenant, 0) + 1
        self.tasks += len(job.tasks)
        first = next(iter(job.tasks.values()), None)
        tenant = first.spec.tenant if first is not None else ""
        self.jobs_by_tenant[tenant] = self.jobs_by_tenant.get(tenant, 0) + 1

    def task_ended(self, task: Task) -> None:
        """Uncount a task that reached its terminal state (and its job, if it was the last)."""
        self.tasks -= 1
        _decrement(self.tasks_by_tenant, task.spec.tenant)
        job = task.job
        if job.remaining == 0:
            first = next(iter(job.tasks.values()))
            _decrement(self.jobs_by_tenant, first.spec.tenant)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]  # a tenant with nothing unfinished costs nothing
