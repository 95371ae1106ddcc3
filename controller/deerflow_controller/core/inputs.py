"""Results flow along dependencies (issue #15): which outputs a task reads, and how long the
controller keeps an output for the dependents that read it. Pure functions of the core's data.

The rule, precisely. A task T that some dependents asked for (``TaskSpec.inputs``) counts them
in ``T.consumers`` when its job is built. When T succeeds (however: it ran, the cache answered
it, an identical task in flight shared its result, its parts were merged), its output is
*retained* for them: it counts against its job's ``retained_bytes``, bounded per task by
``SchedulerConfig.max_retained_output_bytes`` and per job by ``max_retained_job_bytes`` (over
either, T ends FAILED with RESOURCE_EXHAUSTED instead, and its dependents DEPENDENCY_FAILED).
Each consumer that ends, in any terminal state, gives its hold back; when the last one has
ended, T's output stops counting and can no longer be fetched by reference
(``AgentService.FetchInput``). A consumer's retries all get the output again, since it only
ends once.

What "kept" costs in memory: the same bytes object is the output of T's SUCCEEDED event in its
job's log, which clients read (``WatchJob`` replays from any seq) until the job expires
(``job_retention_s`` after it finished), and may be the result cache's entry. The bytes are
freed when the last of the three lets go; the retained-output budget bounds what a job can make
the controller hold *for its dependents*, the part the client does not control by reading.
"""

from __future__ import annotations

from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.model import ErrorKind, Job, Task, TaskError, TaskSpec, TaskState
from deerflow_controller.core.validation import quote

__all__ = [
    "fetchable_input",
    "link_consumers",
    "release_inputs",
    "retain_output",
    "wanted_inputs",
    "wants_inputs",
]


def wants_inputs(spec: TaskSpec) -> bool:
    return spec.inputs_all or bool(spec.inputs)


def wanted_inputs(spec: TaskSpec) -> tuple[str, ...]:
    """The dependencies whose outputs ``spec``'s handler reads, in ``depends_on`` order, each
    once."""
    if spec.inputs_all:
        deps = spec.depends_on
    elif spec.inputs:
        named = frozenset(spec.inputs)
        deps = tuple(d for d in spec.depends_on if d in named)
    else:
        return ()
    return deps if len(set(deps)) == len(deps) else tuple(dict.fromkeys(deps))


def link_consumers(job: Job) -> None:
    """Count, for every task of a newly built job, the dependents that read its output."""
    tasks = job.tasks
    for task in tasks.values():
        spec = task.spec
        if spec.inputs_all or spec.inputs:
            for dep in wanted_inputs(spec):
                tasks[dep].consumers += 1


def retain_output(config: SchedulerConfig, task: Task, *, force: bool = False) -> TaskError | None:
    """Keep a task's output, which it just succeeded with, for its consumers; returns the
    RESOURCE_EXHAUSTED error instead when it is over a bound (``force``: keep it regardless, a
    restored output that was within bounds when it was produced)."""
    if task.retained or task.consumers <= 0:
        return None
    size = len(task.output)
    job = task.job
    if not force:
        limit = config.max_retained_output_bytes
        if size > limit:
            return TaskError(
                ErrorKind.RESOURCE_EXHAUSTED,
                f"task {task.id!r} produced {size} bytes for the dependents that read it, over "
                f"the per-task limit of {limit} bytes (--max-retained-output-bytes); return a "
                "reference (a URL or a key) instead, or raise the limit",
            )
        budget = config.max_retained_job_bytes
        if job.retained_bytes + size > budget:
            return TaskError(
                ErrorKind.RESOURCE_EXHAUSTED,
                f"task {task.id!r}'s output of {size} bytes would bring the outputs job "
                f"{job.id!r} keeps for its dependents to {job.retained_bytes + size} bytes, over "
                f"the per-job budget of {budget} bytes (--max-retained-job-bytes); pass large "
                "results by reference, or raise the budget",
            )
    job.retained_bytes += size
    task.retained = True
    return None


def release_inputs(task: Task) -> None:
    """``task`` ended: give back its hold on each output it read; an output whose last
    consumer this was stops counting against its job."""
    spec = task.spec
    if not (spec.inputs_all or spec.inputs):
        return
    job = task.job
    tasks = job.tasks
    for dep_id in wanted_inputs(spec):
        dep = tasks[dep_id]
        dep.consumers -= 1
        if dep.consumers <= 0 and dep.retained:
            dep.retained = False
            job.retained_bytes -= len(dep.output)


def fetchable_input(
    job: Job, task_id: str, attempt: int, dep_id: str, *, holder: str | None = None
) -> bytes | str:
    """The output of ``dep_id`` for the current, live attempt ``attempt`` of ``task_id`` (a
    task or a part of a split task) when that task asked for it, it is still kept and (with
    ``holder``) the agent ``holder`` holds that attempt; else the reason it is not, in a
    sentence."""
    task = job.tasks.get(task_id)
    if task is None:
        task = job.parts.get(task_id)
    if task is None:
        return f"job {job.id!r} has no task {task_id!r}"
    if task.attempt != attempt or task.state not in (TaskState.DISPATCHED, TaskState.RUNNING):
        return f"attempt {attempt} of task {task_id!r} is not current; its result is not wanted"
    if holder is not None and task.agent_id != holder:
        return f"attempt {attempt} of task {task_id!r} was not given to agent {quote(holder)}"
    spec = task.parent.spec if task.parent is not None else task.spec
    if dep_id not in wanted_inputs(spec):
        return f"task {spec.id!r} did not ask for the output of {dep_id!r} (TaskSpec.inputs)"
    dep = job.tasks[dep_id]
    if not dep.retained or dep.state != TaskState.SUCCEEDED:
        return f"the output of {dep_id!r} is no longer kept"
    return dep.output
