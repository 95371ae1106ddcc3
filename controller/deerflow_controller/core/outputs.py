"""The bytes of task outputs the controller keeps for clients, bounded in all (issue #17,
finding 5). Pure: the core calls these at its clock.

Every SUCCEEDED output stays in memory until its job expires (``job_retention_s`` after it
finished): it is the task's ``output`` and its SUCCEEDED event's (one bytes object), which
``WatchJob`` replays from any seq and ``GetTask`` returns. Jobs that produce large outputs one
after another (``deerflow bench inputs``) grew the controller past 1 GB that way. So the core
counts them (``SchedulerConfig.max_output_bytes``, ``--max-output-bytes``), and a success that
would go over:

1. first makes room by forgetting finished jobs early, the longest finished first, exactly as
   their retention would (a later WatchJob or GetJob of one is NOT_FOUND saying the job was
   forgotten; its watchers get the same);
2. then, if running jobs alone hold the budget, ends the task FAILED with RESOURCE_EXHAUSTED
   and a sentence (not retried: it would produce the same), and its dependents
   DEPENDENCY_FAILED, as an output over ``--max-retained-job-bytes`` does.

A client that reads its results as they come is never affected by (1) unless the controller
is over budget, and then only for jobs it has already had whole; (2) means the running jobs'
outputs themselves exceed the budget: pass large results by reference, or raise it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from deerflow_controller.core.model import ErrorKind, Job, Task, TaskError


@dataclass(slots=True)
class OutputBytes:
    """The SUCCEEDED outputs the core holds, in all, and its finished jobs in finishing order
    (what can be forgotten early)."""

    total: int = 0
    finished: dict[str, Job] = field(default_factory=dict)
    finished_bytes: int = 0
    """Of ``total``, the outputs of the jobs in ``finished``."""
    forgotten_early: int = 0
    """Jobs forgotten before their retention ended, to keep outputs within the budget."""

    def kept(self, task: Task) -> None:
        """A task (not a part) ended SUCCEEDED with its ``output``."""
        size = len(task.output)
        task.job.output_bytes += size
        self.total += size

    def job_finished(self, job: Job) -> None:
        self.finished[job.id] = job
        self.finished_bytes += job.output_bytes

    def job_forgotten(self, job: Job) -> None:
        """``job`` left the core (expired): its outputs go with it."""
        self.total -= job.output_bytes
        if self.finished.get(job.id) is job:
            del self.finished[job.id]
            self.finished_bytes -= job.output_bytes

    def make_room(self, task: Task, budget: int, forget: Callable[[Job], None]) -> TaskError | None:
        """Room for ``task``'s output within ``budget``: forget finished jobs (``forget``,
        which must call :meth:`job_forgotten`) until it fits; the RESOURCE_EXHAUSTED error for
        the task when even that is not enough (nothing is forgotten then)."""
        size = len(task.output)
        if self.total + size <= budget:
            return None
        if self.total - self.finished_bytes + size > budget:
            return TaskError(
                ErrorKind.RESOURCE_EXHAUSTED,
                f"task {task.id!r}'s output of {size} bytes would bring the outputs of running "
                f"jobs this controller keeps to over its budget of {budget} bytes "
                "(--max-output-bytes); return large results by reference, or raise the budget",
            )
        while self.total + size > budget:
            oldest = next(iter(self.finished.values()))
            self.forgotten_early += 1
            forget(oldest)
        return None
