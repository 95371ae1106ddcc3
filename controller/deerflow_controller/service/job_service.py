"""JobService: submit, watch, cancel and inspect jobs (see client.proto)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import AsyncIterator

import grpc

from deerflow_common.gc_tuning import BulkFreezer
from deerflow_controller.core.model import TERMINAL_STATES, Event, Job, TaskState
from deerflow_controller.core.scheduler import Scheduler
from deerflow_controller.core.validation import (
    JobRejected,
    Limits,
    cancel_count_problem,
    quote,
    unknown_ids_problem,
    validate_job,
)
from deerflow_controller.service import wire
from deerflow_controller.service.auth import principal
from deerflow_controller.service.credentials import Principal
from deerflow_controller.service.refused import Refused
from deerflow_controller.service.session import ServedSession
from deerflow_controller.service.shell import SchedulerReplaced, Shell
from deerflow_controller.service.shown import withheld
from deerflow_controller.service.streams import TooManyStreams, WatchStreams, stream_owner
from deerflow_protos import client_pb2, client_pb2_grpc, common_pb2

log = logging.getLogger(__name__)

MAX_EVENTS_PER_MESSAGE = 4096
MAX_WAIT_FOR_SUBMIT_S = 60.0
"""Most seconds a WatchJob may wait for its job to be submitted (``wait_for_submit_s``)."""
_DEADLINE_MARGIN_S = 0.1
"""A waiting WatchJob gives up this long before its caller's deadline, to answer NOT_FOUND."""
BULK_TASKS = 1000
"""A job of at least this many tasks is accepted with the garbage collector paused and what it
built frozen after (``deerflow_common.gc_tuning.BulkFreezer``)."""


class JobService(client_pb2_grpc.JobServiceServicer):  # type: ignore[misc]
    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        cfg = shell.config
        self.limits = Limits(
            max_payload_bytes=cfg.max_payload_bytes,
            max_tasks_per_job=cfg.max_tasks_per_job,
            max_retries=cfg.scheduler.max_retries,
        )
        self.streams = WatchStreams(
            max_streams=cfg.max_watch_streams,
            max_per_client=cfg.max_watch_streams_per_client,
            buffer_bytes=cfg.watch_buffer_bytes,
        )
        self._bulk = BulkFreezer()

    async def SubmitJob(
        self, request: client_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> client_pb2.SubmitJobResponse:
        try:
            return await self.accept(request, principal())
        except Refused as e:
            await context.abort(e.code, e.message)
            raise AssertionError("unreachable") from None

    async def accept(
        self, request: client_pb2.SubmitJobRequest, who: Principal | None
    ) -> client_pb2.SubmitJobResponse:
        """Accept the job ``request`` submitted by ``who`` (SubmitJob, and each submit of a
        Session), or raise :class:`Refused` with the status and sentence; nothing is accepted
        then. Fills in the request's tenants and ``accepted_at``, as the journal records it."""
        if len(request.tasks) < BULK_TASKS:
            return await self._accept(request, who)
        with self._bulk.building():
            return await self._accept(request, who)

    async def _accept(
        self, request: client_pb2.SubmitJobRequest, who: Principal | None
    ) -> client_pb2.SubmitJobResponse:
        if who is not None:
            # Before the specs are built: the journal (HA) keeps the request, tenants filled
            # in, so a new leader knows whose job it is.
            problem = claim_tasks(request, who)
            if problem is not None:
                raise Refused(grpc.StatusCode.PERMISSION_DENIED, problem)
        job_tc = wire.job_trace_context(request)
        specs = wire.specs_from_request(request, job_tc)
        try:
            validate_job(
                specs,
                self.limits,
                deadline_s=request.deadline_s,
                job_id=request.job_id,
                name=request.name,
                trace_context=job_tc,
            )
        except JobRejected as e:
            code = (
                grpc.StatusCode.RESOURCE_EXHAUSTED
                if e.too_large
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            raise Refused(code, e.message) from None
        job_id = request.job_id or uuid.uuid4().hex
        existing = self.shell.job(job_id)
        if existing is not None:
            if not visible(existing, who):
                # Its id is taken; whose job it is, and what it holds, is not said.
                raise Refused(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"job id {quote(job_id)} is taken; use a new job id",
                )
            if set(existing.tasks) == {s.id for s in specs}:
                return client_pb2.SubmitJobResponse(
                    job_id=job_id, accepted=len(existing.tasks), duplicate=True
                )
            raise Refused(
                grpc.StatusCode.ALREADY_EXISTS,
                f"job {quote(job_id)} already exists with different tasks; "
                "use a new job id, or resubmit exactly the same tasks",
            )
        problem = self.shell.scheduler.quotas.problem(specs)
        if problem is not None:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, problem)
        # The journal (HA) records this request: the acceptance time lets a new leader keep
        # the job's deadline.
        request.accepted_at, flushed = self.shell.submit_job(
            job_id, request.name, specs, deadline_s=request.deadline_s
        )
        if flushed and request.watching:
            # The client waits on the results, which its watch opened alongside will carry,
            # not on this reply: one loop turn lets the agents' writers the flush woke start
            # writing the job's assignments before gRPC writes this reply, not after.
            await asyncio.sleep(0)
        return client_pb2.SubmitJobResponse(job_id=job_id, accepted=len(specs))

    async def WatchJob(
        self, request: client_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.TaskEventBatch]:
        wait_s = request.wait_for_submit_s
        if wait_s:
            problem = wait_for_submit_problem(wait_s)
            if problem is not None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        # Waiting for the submit (the SDK opens the watch together with it): not found yet
        # is not an answer; the stream counts against the limits while it waits.
        job = None if wait_s else await self._job(request.job_id, context)
        try:
            host = self.streams.open(context.peer(), stream_owner(principal()))
        except TooManyStreams as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
            return
        try:
            if job is None:
                job = await self._submitted(request.job_id, wait_s, context)
            try:
                async for batch, _ in self.watch(
                    job, request.after_seq, terminal_only=request.filter == client_pb2.TERMINAL
                ):
                    yield batch
            except Refused as e:
                await context.abort(e.code, e.message)
        finally:
            self.streams.close(host)

    async def Session(
        self,
        request_iterator: AsyncIterator[client_pb2.SessionRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        who = principal()
        try:
            # The stream counts as one result stream itself (idle streams are bounded too),
            # and each of its calls as one more while it streams.
            host = self.streams.open(context.peer(), stream_owner(who))
        except TooManyStreams as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
            return
        try:
            await ServedSession(self, context, who).run(request_iterator)
        except Refused as e:
            await context.abort(e.code, e.message)
        finally:
            self.streams.close(host)

    async def _submitted(
        self, job_id: str, wait_s: float, context: grpc.aio.ServicerContext
    ) -> Job:
        """The job ``job_id`` once submitted (the shell wakes its watchers when it is), or
        NOT_FOUND after ``wait_s`` seconds without it. Another tenant's job is waited out like
        one that never comes: neither the answer nor its timing tells that it exists."""
        shell = self.shell
        who = principal()
        job = shell.job(job_id)
        if job is not None and visible(job, who):
            return job
        scheduler = shell.scheduler
        loop = asyncio.get_running_loop()
        left = context.time_remaining()
        if left is not None:
            # Answer with a sentence before the caller's own deadline ends the call.
            wait_s = min(wait_s, max(0.0, left - _DEADLINE_MARGIN_S))
        until = loop.time() + wait_s
        wake = shell.watch(job_id)
        try:
            while (job := shell.job(job_id)) is None or not visible(job, who):
                if shell.scheduler is not scheduler:
                    raise SchedulerReplaced(f"job {quote(job_id)} was awaited across a term's end")
                left = until - loop.time()
                if left <= 0:
                    break
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), left)
        finally:
            shell.unwatch(job_id, wake)
        if job is None or not visible(job, who):
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"{no_job(shell, job_id)}; it was not submitted within the "
                f"{wait_s:.3g} s the watch waited (wait_for_submit_s, or the call's deadline)",
            )
            raise AssertionError("unreachable")
        return job

    async def watch(
        self, job: Job, after_seq: int, *, terminal_only: bool, scheduler: Scheduler | None = None
    ) -> AsyncIterator[tuple[common_pb2.TaskEventBatch, bool]]:
        """The job's events after ``after_seq`` (only terminal ones when ``terminal_only``) in
        messages, as they become deliverable, until the job is done and all were given (WatchJob
        and each call of a Session), each with whether it is the last. A message counts against
        the watch buffer until the consumer asks for the next. Raises :class:`Refused`
        (NOT_FOUND) when the job is forgotten meanwhile, SchedulerReplaced when this controller
        stops leading (HA). ``scheduler``: the one ``job`` was found in, when the caller awaited
        something since (else a term that ended meanwhile would read as the job forgotten)."""
        shell = self.shell
        scheduler = scheduler or shell.scheduler
        cursor = after_seq
        wake = shell.watch(job.id)
        try:
            while True:
                wake.clear()
                events = job.events
                # In HA mode a result goes out once journaled (the shell's delivery limit).
                while cursor < (limit := shell.deliverable(job)):
                    streams = self.streams
                    batch, cursor, size = self._batch(
                        events, cursor, terminal_only, streams.message_bytes(), limit
                    )
                    if batch.events:
                        last = (
                            job.done
                            and cursor >= len(job.events)
                            and shell.scheduler is scheduler
                            and shell.job(job.id) is job
                        )
                        streams.charge(size)
                        try:
                            yield batch, last
                        finally:
                            streams.release(size)
                        if last:
                            return
                # Forgotten (expired): its events are cleared, so "read to the end" is no end.
                forgotten = shell.scheduler is scheduler and shell.job(job.id) is not job
                if job.done and cursor >= len(job.events) and not forgotten:
                    return
                if shell.scheduler is not scheduler:
                    # This controller stopped leading and dropped its state (HA): the job
                    # lives on with the next leader. The leader gate ends the call (once, with
                    # UNAVAILABLE and the new leader's address); raised, not aborted here, as an
                    # abort is awaited and the gate must not race a second one against it.
                    raise SchedulerReplaced(f"job {quote(job.id)} was watched across a term's end")
                if forgotten:
                    raise Refused(
                        grpc.StatusCode.NOT_FOUND,
                        f"job {quote(job.id)} was forgotten while being watched (its retention "
                        "ended, or finished jobs' outputs went over --max-output-bytes); read "
                        "results as they finish, or raise the retention or the budget",
                    )
                await wake.wait()
        finally:
            shell.unwatch(job.id, wake)

    @staticmethod
    def _batch(
        events: list[Event], cursor: int, terminal_only: bool, budget: int, limit: int
    ) -> tuple[common_pb2.TaskEventBatch, int, int]:
        """The events from ``cursor`` up to ``limit`` that fit ``budget`` bytes (at least one),
        the cursor after them, and their size in bytes (approximate: outputs plus 64 each)."""
        batch = common_pb2.TaskEventBatch()
        add = batch.events.add
        size = 0
        end = min(limit, len(events), cursor + MAX_EVENTS_PER_MESSAGE)
        while cursor < end and size < budget:
            ev = events[cursor]
            cursor += 1
            if terminal_only and ev.state not in TERMINAL_STATES:
                continue
            wire.fill_event(ev, add())
            size += len(ev.output) + 64
        return batch, cursor, size

    async def CancelJob(
        self, request: client_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> client_pb2.CancelJobResponse:
        job = await self._job(request.job_id, context)
        ids = request.task_ids
        problem = cancel_count_problem(len(ids), len(job.tasks))
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        problem = unknown_ids_problem(ids, job.tasks, job.id)
        if problem is not None:
            await context.abort(grpc.StatusCode.NOT_FOUND, problem)
        n = self.shell.cancel(job.id, list(ids) or None, request.reason)
        return client_pb2.CancelJobResponse(cancelled=n)

    async def GetJob(
        self, request: client_pb2.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> client_pb2.JobStatus:
        job = await self._job(request.job_id, context)
        # In HA mode as of its journaled results, like WatchJob (``service/shown.py``).
        shown = self.shell.shown(job)
        return client_pb2.JobStatus(
            job_id=job.id,
            name=job.name,
            total=len(job.tasks),
            by_state=shown.by_state(),
            done=shown.done,
            submitted_at=job.submitted_at,
            finished_at=shown.finished_at,
        )

    async def GetTask(
        self, request: client_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> client_pb2.TaskStatus:
        job = await self._job(request.job_id, context)
        task = job.tasks.get(request.task_id)
        if task is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"job {quote(job.id)} has no task {quote(request.task_id)}",
            )
            raise AssertionError("unreachable")
        # In HA mode a result not yet journaled is withheld, like WatchJob (``service/shown.py``).
        held = withheld(job, self.shell.deliverable(job), only=task.id) if task.terminal else {}
        shown = held.get(task.id)
        state, attempt, agent_id = task.state, task.attempt, task.agent_id
        if shown is not None:
            state, attempt, agent_id = shown.state, shown.attempt, shown.agent_id
        out = client_pb2.TaskStatus(
            job_id=job.id,
            task_id=task.id,
            handler=task.spec.handler,
            state=int(state),  # type: ignore[arg-type]
            attempts=attempt,
            agent_id=agent_id,
        )
        if shown is None:
            if task.state == TaskState.SUCCEEDED:
                out.output = task.output
            if task.error is not None:
                wire.error_to_proto(task.error, out.error)
        return out

    async def _job(self, job_id: str, context: grpc.aio.ServicerContext) -> Job:
        job = self.shell.job(job_id)
        if job is None or not visible(job, principal()):
            # Another tenant's job is answered exactly as one that does not exist.
            await context.abort(grpc.StatusCode.NOT_FOUND, no_job(self.shell, job_id))
            raise AssertionError("unreachable")
        return job


def no_job(shell: Shell, job_id: str) -> str:
    """The one sentence for a job that is not here, or is another tenant's."""
    return (
        f"no job {quote(job_id)}: it was never submitted here, or it finished more than "
        f"{shell.config.scheduler.job_retention_s:g} s ago and was forgotten (sooner "
        "when finished jobs' outputs go over --max-output-bytes)"
    )


def wait_for_submit_problem(wait_s: float) -> str | None:
    """The sentence refusing a WatchJob's ``wait_for_submit_s``, or None when it is in range."""
    if not math.isfinite(wait_s) or not 0 <= wait_s <= MAX_WAIT_FOR_SUBMIT_S:
        return (
            f"WatchJob's wait_for_submit_s is {wait_s!r}; give a number of seconds from 0 to "
            f"{MAX_WAIT_FOR_SUBMIT_S:g}"
        )
    return None


def job_tenant(job: Job) -> str:
    """Whose job this is: its tasks' tenant. With authentication every task of a job carries
    the submitting token's tenant (``claim_tasks``), and the journal keeps them, so ownership
    survives a failover with no state of its own."""
    for task in job.tasks.values():
        return task.spec.tenant
    return ""


def visible(job: Job, who: Principal | None) -> bool:
    """May ``who`` see ``job``? Everyone when authentication is off; an admin always; a user
    only its own tenant's jobs."""
    return who is None or who.admin or job_tenant(job) == who.tenant


def claim_tasks(request: client_pb2.SubmitJobRequest, who: Principal) -> str | None:
    """Give every task without a tenant the caller's; a sentence when one names another."""
    tenant = who.tenant
    for task in request.tasks:
        if not task.tenant:
            task.tenant = tenant
        elif task.tenant != tenant:
            return (
                f"task {quote(task.id)}'s field tenant is {quote(task.tenant)}, but token "
                f"{quote(who.name)} submits for tenant {quote(tenant)}; leave tenant empty or "
                f"set it to {quote(tenant)}"
            )
    return None
