"""Result-cache glue of the core (issue #6): answering ready tasks from the cache, in-flight
dedup of identical tasks, storing results, and spending idle slots on the preloader's
speculative tasks. The cache itself is ``cache/``; this is how the core uses it."""

from __future__ import annotations

from deerflow_controller.cache import Hit, RequestKey, ResultCache, Skip
from deerflow_controller.cache.result_cache import default_skip
from deerflow_controller.core.model import CachePolicy, Task, TaskSpec, TaskState
from deerflow_controller.core.port import CorePort
from deerflow_controller.core.types import PRELOAD_PRIORITY


class Caching:
    """The result cache as the core uses it (installed with ``SchedulerCore.use_cache``). Owns
    the cache and the preloader's state; talks to the core through its
    :class:`~deerflow_controller.core.port.CorePort`."""

    __slots__ = ("_core", "_preload_from", "_preload_seq", "_preloading", "_speculations", "cache")

    def __init__(self, core: CorePort, cache: ResultCache) -> None:
        self._core = core
        self.cache = cache
        self._preload_from: dict[str, tuple[str, TaskSpec]] = {}
        """Per cacheable handler, the job id and spec of the last real task looked up: the
        preloader's context (its rate keys and labels go to the speculative tasks)."""
        self._speculations: dict[tuple[str, str], RequestKey] = {}
        self._preload_seq = 0
        self._preloading = False

    def from_cache(self, task: Task, now: float) -> bool:
        """Look the task up in the result cache: True when it was answered (a hit) or attached
        to an identical running task (in-flight dedup); False to run it."""
        cache = self.cache
        core = self._core
        spec = task.spec
        traits = core.traits.get(spec.handler)
        if traits is None:
            return False  # no agent has declared the handler yet: nothing is cacheable
        ref = (task.job.id, spec.id)
        if self._speculations:
            speculation = self._speculations.pop(ref, None)
            if speculation is not None:
                task.speculative = True
                task.cache_key = speculation
                cache.attach(speculation, ref)
                return False
        # Keyed per tenant: one tenant's answer is never another's (docs/SECURITY.md).
        found = cache.lookup(
            spec.handler, traits, spec.payload, spec.cache, now, task.job.id, spec.tenant
        )
        if isinstance(found, Skip):
            return False  # not cacheable (or unkeyable): nothing to find, nothing to preload
        if cache.config.preload:
            self._preload_from[spec.handler] = (task.job.id, spec)
        if isinstance(found, Hit):
            task.output = found.output
            core.finish(
                task, TaskState.SUCCEEDED, now, detail=found.reason, cache_layer=found.layer
            )
            return True
        task.cache_key = found.key
        leader = cache.attach(found.key, (task.job.id, spec.id))
        if leader is None:
            return False
        task.cache_leader = leader
        task.state = TaskState.QUEUED
        core.emit(
            task,
            TaskState.QUEUED,
            now,
            detail=f"waiting for the identical task {leader[1]!r} of job {leader[0]!r} "
            "(in-flight dedup)",
        )
        return True

    def unlooked(self, handler: str, n: int) -> bool:
        """Whether :meth:`from_cache` answers False for every task of ``handler`` with the
        default cache policy without looking at it (the handler is undeclared, or not
        cacheable, or nondeterministic, and no speculation waits to be attached). If so, counts
        ``n`` such tasks skipped, as from_cache would have counted each."""
        if self._speculations:
            return False
        traits = self._core.traits.get(handler)
        if traits is None:
            return True
        reason = default_skip(traits)
        if reason is None:
            return False
        self.cache.count_skips(reason, n)
        return True

    def settle(self, task: Task, state: TaskState, now: float) -> None:
        """A task that led or followed a cache flight ended: store and share the leader's
        result, or release its followers to run; a follower that ends leaves its flight."""
        cache = self.cache
        core = self._core
        key = task.cache_key
        if key is None:
            task.cache_leader = None
            return
        ref = (task.job.id, task.spec.id)
        if task.cache_leader is not None:
            task.cache_leader = None
            if state != TaskState.SUCCEEDED:
                cache.detach(key, ref)
            return
        task.cache_key = None
        if state == TaskState.SUCCEEDED:
            followers = cache.complete(
                key, task.output, task.run_s, now, speculative=task.speculative
            )
            for job_id, task_id in followers:
                follower = core.task_for((job_id, task_id, 0))
                if follower is not None and not follower.terminal and follower.cache_leader:
                    follower.output = task.output
                    core.finish(
                        follower,
                        TaskState.SUCCEEDED,
                        now,
                        detail=f"deduplicated: the identical task {task.id!r} ran once for both",
                        cache_layer="inflight",
                    )
            return
        for job_id, task_id in cache.fail(key):
            follower = core.task_for((job_id, task_id, 0))
            if follower is not None and not follower.terminal and follower.cache_leader:
                follower.cache_leader = None
                follower.cache_key = None
                core.make_ready(
                    follower, now, detail=f"the identical task {task.id!r} ended {state.name}"
                )

    def preload(self, now: float) -> None:
        """Nothing is ready: spend idle slots and spare rate quota, and only those, on
        speculative lowest-priority tasks whose results land in the cache (the preloader backs
        off when they go unused). Not re-entered from the dispatch its own submit runs."""
        if not self._preload_from or self._preloading:
            return
        self._preloading = True
        try:
            self._preload(now)
        finally:
            self._preloading = False

    def _preload(self, now: float) -> None:
        cache = self.cache
        core = self._core
        for handler, (context, spec) in list(self._preload_from.items()):
            # A free slot means credit (a draining agent has none): only agents with credit.
            idle = sum(
                max(0, a.slots - len(a.in_flight))
                for a in core.credit_index.order
                if handler in a.handlers
            )
            if idle <= 0:
                continue
            spare = float(idle)  # unlimited keys: the idle slots are the bound
            if spec.rate_keys:
                spare = min(spare, core.limiter.spare(spec.rate_keys, now))
            speculations = cache.speculate(context, handler, idle, spare, now)
            if not speculations:
                continue
            self._preload_seq += 1
            job_id = f"preload-{self._preload_seq}"
            specs = []
            for i, s in enumerate(speculations):
                task_id = f"{handler}-{i}"
                self._speculations[(job_id, task_id)] = s.key
                specs.append(
                    TaskSpec(
                        id=task_id,
                        handler=handler,
                        payload=s.payload,
                        priority=PRELOAD_PRIORITY,
                        max_retries=0,
                        labels=spec.labels,
                        rate_keys=spec.rate_keys,
                        tenant="preload",
                        cache=CachePolicy.REFRESH,
                    )
                )
            core.outbox().notices.append(
                f"preloading {len(specs)} likely next {handler} request(s) after job "
                f"{context!r} ({idle} idle slots)"
            )
            core.submit(job_id, "preload", specs, now)
