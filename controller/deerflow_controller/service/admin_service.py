"""AdminService: stats, agents, drains and the tuner's history for operators (see admin.proto)."""

from __future__ import annotations

import statistics

import grpc

from deerflow_controller.core.model import TaskState
from deerflow_controller.core.predictor import Features
from deerflow_controller.core.summaries import cache_summary, circuit_summary, quarantine_summary
from deerflow_controller.core.validation import quote
from deerflow_controller.service.auth import principal
from deerflow_controller.service.job_service import job_tenant, no_job, visible
from deerflow_controller.service.job_views import ViewRefused, job_detail, list_jobs
from deerflow_controller.service.shell import Shell
from deerflow_controller.service.tuner_loop import TunerLoop
from deerflow_protos import admin_pb2, admin_pb2_grpc


def _add_intelligence(stats: admin_pb2.Stats, shell: Shell, now: float) -> None:
    """The predictor's accuracy, circuits, quarantines and the scheduling counters (#4)."""
    sched = shell.scheduler
    c = sched.counters
    stats.schedule_timeouts = c.schedule_timeouts
    stats.heartbeat_timeouts = c.heartbeat_timeouts
    stats.split_tasks = c.split_tasks
    stats.stolen = c.stolen
    stats.assignment_messages = shell.assignment_messages
    stats.assignments_sent = shell.assignments_sent
    predictor = sched.predictor
    for name in sorted(set(sched.accuracy) | set(sched.traits)):
        errors = sched.accuracy.get(name)
        estimate = predictor.predict(name, Features(0, 0))
        stats.handlers.add(
            name=name,
            predictions=len(errors) if errors else 0,
            mdape=statistics.median(errors) if errors else 0.0,
            median_s=estimate.duration_s,
            io_fraction=predictor.io_fraction(name),
        )
    for circuit in circuit_summary(sched, now):
        stats.circuits.add(**circuit)
    cache = cache_summary(sched)
    if cache["enabled"]:
        out = stats.cache
        out.entries = cache["entries"]
        out.bytes = cache["bytes"]
        out.hits.update(cache["hits"])
        out.misses = cache["misses"]
        out.skipped = cache["skipped"]
        out.evictions.update(cache["evictions"])
        out.hit_rate = cache["hit_rate"]
        out.preloads = cache["preloads"]
        out.preload_useful_ratio = cache["preload_useful_ratio"]
    for q in quarantine_summary(sched, now):
        stats.quarantined.add(
            agent_id=q["agent"], handler=q["handler"], reason=q["reason"], for_s=q["for_s"]
        )


def _add_tuning(stats: admin_pb2.Stats, tuner: TunerLoop) -> None:
    """The tuner's mode, knobs and history (issue #16)."""
    summary = tuner.summary()
    out = stats.tuning
    out.mode = summary["mode"]
    out.objective = summary["objective"]
    out.interval_s = summary["interval_s"]
    out.converged = summary["converged"]
    for k in summary["knobs"]:
        out.knobs.add(name=k["name"], value=k["value"], floor=k["floor"], ceiling=k["ceiling"])
    for c in tuner.tuner.history:
        out.history.add(
            seq=c.seq,
            at=c.at,
            knob=c.knob,
            old_value=c.old,
            new_value=c.new,
            reason=c.reason,
            objective=c.objective,
            before=c.before,
            before_detail=c.before_detail,
            judged=c.after is not None,
            after=c.after if c.after is not None else 0.0,
            after_detail=c.after_detail,
            outcome=c.outcome.value,
            verdict=c.verdict,
            judged_at=c.judged_at,
        )


class AdminService(admin_pb2_grpc.AdminServiceServicer):  # type: ignore[misc]
    def __init__(self, shell: Shell, tuner: TunerLoop | None = None) -> None:
        self.shell = shell
        self.tuner = tuner

    async def GetStats(
        self, request: admin_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.Stats:
        who = principal()
        if who is not None and not who.admin:
            return self._tenant_stats(who.tenant)
        shell = self.shell
        sched = shell.scheduler
        c = sched.counters
        by_state: dict[str, int] = {}
        # HA mode: a result not yet journaled is not told (as WatchJob and GetJob tell it): its
        # task still counts in flight, not in its terminal state's total, and a job done in the
        # core with one still counts active.
        held = shell.withheld_totals()
        active = held.done_jobs
        for job in sched.jobs.values():
            if not job.done:
                active += 1
        # Live counts come from the counters and the queue, never from a scan of every task.
        in_flight = sum(len(a.in_flight) for a in sched.agents.values()) + held.tasks
        withheld = held.by_state
        succeeded = c.succeeded - withheld.get(TaskState.SUCCEEDED, 0)
        failed = c.failed - withheld.get(TaskState.FAILED, 0)
        cancelled = c.cancelled - withheld.get(TaskState.CANCELLED, 0)
        timed_out = c.timed_out - withheld.get(TaskState.TIMED_OUT, 0)
        by_state[TaskState.QUEUED.name] = sched.queued()
        by_state["IN_FLIGHT"] = in_flight
        by_state[TaskState.SUCCEEDED.name] = succeeded
        by_state[TaskState.FAILED.name] = failed
        by_state[TaskState.CANCELLED.name] = cancelled
        by_state[TaskState.TIMED_OUT.name] = timed_out
        stats = admin_pb2.Stats(
            controller_id=shell.config.controller_id,
            epoch=shell.config.epoch,
            uptime_s=shell.clock() - shell.started_at,
            tasks_by_state=by_state,
            submitted=c.submitted,
            succeeded=succeeded,
            failed=failed,
            cancelled=cancelled,
            timed_out=timed_out,
            retries=c.retries,
            queued=sched.queued(),
            agents=len(sched.agents),
            jobs_active=active,
            completed_per_s=shell.completed_per_s(),
        )
        now = shell.clock()
        for key, gate in sorted(sched.limiter.gates.items()):
            conc = gate.concurrency
            stats.rate_keys.add(
                key=key,
                paced_rps=gate.request_rate() or 0.0,
                concurrency_limit=conc.value if conc is not None else 0,
                in_flight=gate.in_flight,
                waiting=gate.waiting,
                admitted=gate.stats.admitted,
                waited=gate.stats.waited,
                rate_limited=gate.stats.rate_limited,
                tokens=gate.stats.tokens,
                paused_for_s=max(0.0, gate.paused_until - now),
                limit_stated=gate.learner is not None and gate.learner.stated,
            )
        _add_intelligence(stats, shell, now)
        if self.tuner is not None:
            _add_tuning(stats, self.tuner)
        return stats

    def _tenant_stats(self, tenant: str) -> admin_pb2.Stats:
        """A user's view (authentication on, not an admin): the counts of its own tenant's
        jobs still held here, and nothing about other tenants' work (no rate keys, handlers,
        circuits or cluster-wide counters)."""
        shell = self.shell
        sched = shell.scheduler
        by_state: dict[str, int] = {}
        active = 0
        for job in sched.jobs.values():
            if job_tenant(job) != tenant:
                continue
            shown = shell.shown(job)  # HA: as of its journaled results
            active += not shown.done
            for name, n in shown.by_state().items():
                by_state[name] = by_state.get(name, 0) + n
        return admin_pb2.Stats(
            controller_id=shell.config.controller_id,
            epoch=shell.config.epoch,
            uptime_s=shell.clock() - shell.started_at,
            tasks_by_state=by_state,
            submitted=sum(by_state.values()),
            succeeded=by_state.get(TaskState.SUCCEEDED.name, 0),
            failed=by_state.get(TaskState.FAILED.name, 0),
            cancelled=by_state.get(TaskState.CANCELLED.name, 0),
            timed_out=by_state.get(TaskState.TIMED_OUT.name, 0),
            agents=len(sched.agents),
            jobs_active=active,
        )

    async def ListAgents(
        self, request: admin_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.AgentList:
        if request.wait_for > 0:
            await self.shell.wait_for_agents(request.wait_for)
        out = admin_pb2.AgentList()
        for a in self.shell.scheduler.agents.values():
            out.agents.add(
                agent_id=a.id,
                handlers=sorted(a.handlers),
                slots=a.slots,
                in_flight=len(a.in_flight),
                running=a.running,
                cpu_percent=a.cpu_percent,
                memory_percent=a.memory_percent,
                process_cpu_percent=a.process_cpu_percent,
                draining=a.draining,
                connected_at=a.connected_at,
                last_heartbeat=a.last_heartbeat,
                labels=a.labels,
                completed=a.completed,
            )
        return out

    async def DrainAgent(
        self, request: admin_pb2.DrainAgentRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DrainAgentResponse:
        shell = self.shell
        if not shell.drain_agent(request.agent_id, "requested by an operator"):
            # A few names, not all: a status message over gRPC's metadata limit never arrives.
            names = sorted(shell.sessions)
            known = ", ".join(quote(n, 32) for n in names[:5]) or "none"
            if len(names) > 5:
                known += f" and {len(names) - 5} more"
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no agent {quote(request.agent_id)} is connected (connected: {known})",
            )
        return admin_pb2.DrainAgentResponse()

    async def ListJobs(
        self, request: admin_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.JobList:
        shell = self.shell
        try:
            return list_jobs(
                shell.scheduler.jobs.values(),
                principal(),
                shell.clock(),
                request.limit,
                request.cursor,
                request.state,
                shown=shell.shown,
            )
        except ViewRefused as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise AssertionError("unreachable") from None

    async def GetJob(
        self, request: admin_pb2.GetJobDetailRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.JobDetail:
        shell = self.shell
        job = shell.job(request.job_id)
        if job is None or not visible(job, principal()):
            # Another tenant's job is answered exactly as one that does not exist (job_service).
            await context.abort(grpc.StatusCode.NOT_FOUND, no_job(shell, request.job_id))
            raise AssertionError("unreachable")
        try:
            return job_detail(
                shell.shown(job), shell.clock(), request.task_limit, request.task_offset
            )
        except ViewRefused as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise AssertionError("unreachable") from None
