"""The asyncio client: submit jobs, stream their results, cancel, inspect."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Literal

import grpc
from opentelemetry.trace import TracerProvider

from deerflow_common import channel_options
from deerflow_common.tls import TlsFiles, aio_channel
from deerflow_controller.client import _fork as fork
from deerflow_controller.client._errors import (
    DeerflowError,
    UnavailableError,
    from_rpc_error,
)
from deerflow_controller.client._handle import JobHandle
from deerflow_controller.client._retry import Moved, Retry
from deerflow_controller.client._session import (
    SESSION_MAX_TASKS,
    Sessions,
    metadata_value,
)
from deerflow_controller.client._tracing import submit_span
from deerflow_controller.client._types import Task, TaskEvent, TaskResult
from deerflow_controller.client._watch import (
    WAIT_FOR_SUBMIT_S,
    ResultsOf,
    events_of,
    watch_batches,
)
from deerflow_protos import admin_pb2, admin_pb2_grpc, client_pb2, client_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:7400"

LEADER_METADATA = "deerflow-leader"
"""Trailing metadata of a standby's refusal: the leader's address (see ``ha.leader_gate``)."""

_WATCH_FILTERS = {"results": client_pb2.TERMINAL, "events": client_pb2.ALL}


class AsyncClient:
    """A connection to the leader controller.

    ``address`` may list several controllers (``"10.0.0.5:7400,10.0.0.6:7400"``): the client
    talks to one, follows a standby's pointer to the leader, and moves to the next when one is
    unreachable. Submits carry a job id chosen here, so retrying one after a failover is
    idempotent; result streams re-attach to the new leader and deliver each task id once.

    Every unary call takes ``timeout_s`` (default: the client's ``timeout_s``); streams run until
    the job is done unless given one. Errors are :class:`DeerflowError` subclasses carrying the
    gRPC status. Use as ``async with AsyncClient(addr) as client: ...``.

    Each submit makes a ``deerflow.submit`` span through ``tracer_provider`` (default:
    OpenTelemetry's global provider, a no-op unless the application configured one) and sends
    its W3C context with every task, so each task's trace runs on through the controller and the
    agent.

    ``token``: the bearer token of a controller that authenticates clients (``--auth-file``),
    sent as ``authorization: Bearer <token>`` metadata on every call; None sends none. The SDK
    does not read the environment itself (the CLI and the drop-ins read ``DEERFLOW_TOKEN``).

    ``tls``: talk TLS, trusting ``tls.ca`` (None: the system's roots) and presenting
    ``tls.cert``/``tls.key`` to a controller that requires client certificates; None:
    plaintext. A bad file raises :class:`~deerflow_common.tls.TlsError` (a ValueError naming
    it) here. The CLI and the drop-ins read ``$DEERFLOW_TLS_CA``, ``$DEERFLOW_TLS_CERT`` and
    ``$DEERFLOW_TLS_KEY`` (``TlsFiles.from_env()``).
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout_s: float | None = 30.0,
        tracer_provider: TracerProvider | None = None,
        token: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self._auth: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self.tls = tls
        self.addresses = [a.strip() for a in address.split(",") if a.strip()] or [address]
        self.address = self.addresses[0]
        self.timeout_s = timeout_s
        self.tracer_provider = tracer_provider
        fork.opening()  # refuses in a child forked after its parent used gRPC
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._sessions = Sessions()
        self._use(self.address)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._sessions.close()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    # ----------------------------------------------------------------- leader discovery

    def _use(self, address: str) -> None:
        channel = self._channels.get(address)
        if channel is None:
            # TLS files are read here, once per controller address this client talks to.
            channel = self._channels[address] = aio_channel(address, self.tls, channel_options())
        self.address = address
        self._channel = channel
        self._jobs = client_pb2_grpc.JobServiceStub(channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(channel)

    def _move(self, error: grpc.aio.AioRpcError) -> Moved:
        """After UNAVAILABLE, pick the controller to try next: the leader the refusal named
        (``POINTER``); the same one when it names itself (``STAYED``: it won the election and is
        still restoring, so it serves in a moment); else the next configured address
        (``NEXT``). ``NOWHERE`` when there is one address and no pointer."""
        leader = metadata_value(error.trailing_metadata(), LEADER_METADATA)
        if leader and leader != self.address:
            self._use(leader)
            return Moved.POINTER
        if leader:
            return Moved.STAYED
        if len(self.addresses) > 1:
            i = self.addresses.index(self.address) if self.address in self.addresses else -1
            self._use(self.addresses[(i + 1) % len(self.addresses)])
            return Moved.NEXT
        return Moved.NOWHERE

    async def _unary(
        self, call: Callable[[], Awaitable[Any]], timeout_s: float | None, *, retry: bool
    ) -> Any:
        """One unary call; with several controllers (or a standby's pointer), UNAVAILABLE
        moves to another and, when ``retry`` (idempotent calls), tries again until the
        deadline."""
        loop = asyncio.get_running_loop()
        timeout = self._timeout(timeout_s)
        deadline = None if timeout is None else loop.time() + timeout
        pauses = Retry()
        while True:
            try:
                return await call()
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or not retry:
                    raise from_rpc_error(e, self.address) from None
                failed_at = self.address
                moved = self._move(e)
                pause = pauses.pause_s(followed_pointer=moved is Moved.POINTER)
                out_of_time = deadline is not None and loop.time() + pause >= deadline
                if out_of_time or moved is Moved.NOWHERE:
                    raise from_rpc_error(e, failed_at) from None
            await asyncio.sleep(pause)

    def _remaining(self, deadline: float | None) -> float | None:
        if deadline is None:
            return None
        return max(0.001, deadline - asyncio.get_running_loop().time())

    def _timeout(self, timeout_s: float | None) -> float | None:
        return self.timeout_s if timeout_s is None else timeout_s

    def _deadline(self, timeout_s: float | None) -> float | None:
        timeout = self._timeout(timeout_s)
        return None if timeout is None else asyncio.get_running_loop().time() + timeout

    # ----------------------------------------------------------------- jobs

    async def submit(
        self,
        tasks: Iterable[Task],
        *,
        job_id: str = "",
        name: str = "",
        timeout_s: float | None = None,
        deadline_s: float = 0.0,
        watch: Literal["", "results", "events"] = "",
        cancel_if_abandoned: bool = False,
    ) -> JobHandle:
        """Submit a job (a DAG through ``depends_on``). Returns once the controller accepted it.

        ``watch``: have the job's results (``"results"``, for the handle's ``results()``,
        ``result()`` and ``wait()``) or all its events (``"events"``, for ``events()``) sent as
        they come: the submit and its events travel on the client's one Session stream to the
        controller (see client.proto), with no call of their own, which is what makes a small
        job's round trip short; the handle's first such read takes them. A job of more than
        ``SESSION_MAX_TASKS`` tasks, a controller that predates Session, or a break of the
        stream get SubmitJob with a WatchJob alongside instead (its results paced to their
        reader by gRPC's flow control; read only by a reader without ``timeout_s``), resuming
        where the stream stopped.

        Raises InvalidJobError / ResourceExhaustedError when refused; nothing is accepted then.
        Passing ``job_id`` makes the submit idempotent: resubmitting the same tasks is a no-op.
        Without one, the client picks one, so its own retries (after a failover) are too.
        ``deadline_s`` (seconds after the controller accepts the job; 0 = none, at most 7 days)
        ends every task not finished by then TIMED_OUT (JOB_DEADLINE_EXCEEDED); ``timeout_s``
        bounds only this call. ``cancel_if_abandoned`` (with ``watch``): when this call is
        cancelled (or times out) before its answer, cancel the job if it was accepted, the
        cancel sent after the submit on the Session stream so that it cannot overtake it
        (through SubmitJob, without a stream: not done; cancel it yourself)."""
        job_id = job_id or uuid.uuid4().hex
        with submit_span(self.tracer_provider, job_id, name) as (span, trace_context):
            request = client_pb2.SubmitJobRequest(
                job_id=job_id, name=name, deadline_s=deadline_s, watching=bool(watch)
            )
            add = request.tasks.add
            for task in tasks:
                task.fill_proto(add())
            if trace_context:
                # Once per job: every task without its own context gets this one.
                request.trace_context.update(trace_context)
            span.set_attribute("deerflow.tasks", len(request.tasks))
            deadline = self._deadline(timeout_s)
            flt = _WATCH_FILTERS[watch] if watch else None
            if flt is not None and len(request.tasks) <= SESSION_MAX_TASKS:
                fast = await self._sessions.submit(
                    self._jobs,
                    self._auth,
                    self.address,
                    request,
                    flt,
                    deadline,
                    cancel_if_abandoned=cancel_if_abandoned,
                )
                if fast is not None:
                    span.set_attribute("deerflow.job.id", fast[0].job_id)
                    handle = JobHandle(self, fast[0].job_id, fast[0].accepted)
                    handle._opened = (flt, fast[1])
                    return handle
            opened: Any = None

            def open_watch() -> None:
                nonlocal opened
                if opened is None and flt is not None:
                    opened = self._jobs.WatchJob(
                        client_pb2.WatchJobRequest(
                            job_id=job_id, filter=flt, wait_for_submit_s=WAIT_FOR_SUBMIT_S
                        ),
                        metadata=self._auth,
                    )

            def call() -> Any:
                submitted = self._jobs.SubmitJob(
                    request, timeout=self._remaining(deadline), metadata=self._auth
                )
                if flt is not None and opened is None:
                    # Right behind the submit, once its request is on its way.
                    asyncio.get_running_loop().call_soon(open_watch)
                return submitted

            try:
                reply = await self._unary(call, timeout_s, retry=True)
            except BaseException:
                if opened is not None:
                    opened.cancel()
                raise
            span.set_attribute("deerflow.job.id", reply.job_id)
        handle = JobHandle(self, reply.job_id, reply.accepted)
        if opened is not None and flt is not None:
            handle._opened = (flt, opened)
        return handle

    async def events(
        self,
        job_id: str,
        *,
        terminal_only: bool = False,
        after_seq: int = 0,
        timeout_s: float | None = None,
        reconnect: bool = True,
        _opened: Any = None,
    ) -> AsyncIterator[TaskEvent]:
        """Stream a job's events in order until the job is done.

        When the stream breaks (controller restart, failover) it resumes from the last seq seen,
        so no event is delivered twice and none is skipped. After a failover the new leader's log
        restarts (its seq numbers belong to another epoch): it is replayed from the start, so
        events of a task may repeat; :meth:`results` delivers each task id once regardless."""
        async for batch in self.event_batches(
            job_id,
            terminal_only=terminal_only,
            after_seq=after_seq,
            timeout_s=timeout_s,
            reconnect=reconnect,
            _opened=_opened,
        ):
            for ev in batch:
                yield ev

    def event_batches(
        self,
        job_id: str,
        *,
        terminal_only: bool = False,
        after_seq: int = 0,
        timeout_s: float | None = None,
        reconnect: bool = True,
        _opened: Any = None,
    ) -> AsyncIterator[list[TaskEvent]]:
        """:meth:`events` a message at a time: each list holds the events of one WatchJob
        message (every event the controller had ready), in order, never empty. What the
        blocking :class:`Client` hands across threads, one crossing per list.

        ``_opened``: the stream ``submit(watch=...)`` opened with the same filter, read first
        (its reconnections, too, let the controller wait for the submit)."""
        return watch_batches(
            self, job_id, events_of, terminal_only, after_seq, timeout_s, reconnect, _opened
        )

    async def results(
        self, job_id: str, *, timeout_s: float | None = None, _opened: Any = None
    ) -> AsyncIterator[TaskResult]:
        """Yield each task's terminal result as it completes, exactly once per task id."""
        async for batch in self.result_batches(job_id, timeout_s=timeout_s, _opened=_opened):
            for r in batch:
                yield r

    def result_batches(
        self, job_id: str, *, timeout_s: float | None = None, _opened: Any = None
    ) -> AsyncIterator[list[TaskResult]]:
        """:meth:`results` a message at a time (each list in order, never empty)."""
        return watch_batches(self, job_id, ResultsOf(), True, 0, timeout_s, True, _opened)

    async def result(
        self, job_id: str, task_id: str, *, timeout_s: float | None = None, _opened: Any = None
    ) -> TaskResult:
        """Wait for one task's terminal result (does not raise if it failed: see ``ok``)."""
        async for r in self.results(job_id, timeout_s=timeout_s, _opened=_opened):
            if r.task_id == task_id:
                return r
        raise DeerflowError(f"job {job_id!r} finished without a result for task {task_id!r}")

    async def wait(
        self, job_id: str, *, timeout_s: float | None = None, _opened: Any = None
    ) -> dict[str, TaskResult]:
        """Wait for the whole job; return every task's result keyed by task id."""
        return {
            r.task_id: r
            async for batch in self.result_batches(job_id, timeout_s=timeout_s, _opened=_opened)
            for r in batch
        }

    async def run(
        self,
        tasks: Iterable[Task],
        *,
        job_id: str = "",
        name: str = "",
        timeout_s: float | None = None,
        deadline_s: float = 0.0,
    ) -> dict[str, TaskResult]:
        """Submit a job and wait for it: :meth:`submit` then :meth:`wait`, as one call (for the
        blocking :class:`Client`, one thread crossing instead of two). Returns every task's
        result keyed by task id; raises what :meth:`submit` raises. The submit and the
        results travel on the client's Session stream (see :meth:`submit`'s ``watch``).

        ``timeout_s`` bounds the whole call, submit and wait (None: the submit gets the
        client's ``timeout_s``, the wait no bound); when it passes, DeadlineExceededError is
        raised and the job runs on (``deadline_s`` bounds the job itself, see :meth:`submit`)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        job = await self.submit(
            tasks,
            job_id=job_id,
            name=name,
            timeout_s=timeout_s,
            deadline_s=deadline_s,
            watch="results",
        )
        return await job.wait(
            timeout_s=None if timeout_s is None else timeout_s - (loop.time() - started)
        )

    async def cancel(
        self,
        job_id: str,
        task_ids: Iterable[str] = (),
        *,
        reason: str = "",
        timeout_s: float | None = None,
    ) -> int:
        """Cancel tasks (the whole job when ``task_ids`` is empty); returns how many were live."""
        request = client_pb2.CancelJobRequest(job_id=job_id, task_ids=list(task_ids), reason=reason)
        deadline = self._deadline(timeout_s)
        reply = await self._unary(
            lambda: self._jobs.CancelJob(
                request, timeout=self._remaining(deadline), metadata=self._auth
            ),
            timeout_s,
            retry=True,
        )
        return int(reply.cancelled)

    async def get_job(self, job_id: str, *, timeout_s: float | None = None) -> client_pb2.JobStatus:
        deadline = self._deadline(timeout_s)
        reply: client_pb2.JobStatus = await self._unary(
            lambda: self._jobs.GetJob(
                client_pb2.GetJobRequest(job_id=job_id),
                timeout=self._remaining(deadline),
                metadata=self._auth,
            ),
            timeout_s,
            retry=True,
        )
        return reply

    async def get_task(
        self, job_id: str, task_id: str, *, timeout_s: float | None = None
    ) -> client_pb2.TaskStatus:
        deadline = self._deadline(timeout_s)
        task: client_pb2.TaskStatus = await self._unary(
            lambda: self._jobs.GetTask(
                client_pb2.GetTaskRequest(job_id=job_id, task_id=task_id),
                timeout=self._remaining(deadline),
                metadata=self._auth,
            ),
            timeout_s,
            retry=True,
        )
        return task

    # ----------------------------------------------------------------- admin

    async def stats(self, *, timeout_s: float | None = None) -> admin_pb2.Stats:
        deadline = self._deadline(timeout_s)
        stats: admin_pb2.Stats = await self._unary(
            lambda: self._admin.GetStats(
                admin_pb2.GetStatsRequest(), timeout=self._remaining(deadline), metadata=self._auth
            ),
            timeout_s,
            retry=True,
        )
        return stats

    async def agents(
        self, *, wait_for: int = 0, timeout_s: float | None = None
    ) -> list[admin_pb2.AgentInfo]:
        """Connected agents; with ``wait_for`` blocks until that many are connected."""
        deadline = self._deadline(timeout_s)
        reply = await self._unary(
            lambda: self._admin.ListAgents(
                admin_pb2.ListAgentsRequest(wait_for=wait_for),
                timeout=self._remaining(deadline),
                wait_for_ready=wait_for > 0,
                metadata=self._auth,
            ),
            timeout_s,
            retry=True,
        )
        return list(reply.agents)

    async def list_jobs(
        self,
        *,
        limit: int = 0,
        cursor: str = "",
        state: str = "",
        timeout_s: float | None = None,
    ) -> admin_pb2.JobList:
        """A page of the jobs the controller holds, newest first (``limit`` 0 = 50, at most
        500); pass ``next_cursor`` back as ``cursor`` for the next page. ``state``: "" or one
        of RUNNING, SUCCEEDED, FAILED, CANCELLED. A user token lists its tenant's jobs only."""
        deadline = self._deadline(timeout_s)
        reply: admin_pb2.JobList = await self._unary(
            lambda: self._admin.ListJobs(
                admin_pb2.ListJobsRequest(limit=limit, cursor=cursor, state=state),
                timeout=self._remaining(deadline),
                metadata=self._auth,
            ),
            timeout_s,
            retry=True,
        )
        return reply

    async def job_detail(
        self,
        job_id: str,
        *,
        task_limit: int = 0,
        task_offset: int = 0,
        timeout_s: float | None = None,
    ) -> admin_pb2.JobDetail:
        """One job with a page of its tasks (``task_limit`` 0 = 500, at most 2000), each with
        its attempts and events; ``next_task_offset`` is the next page's ``task_offset``.
        Raises NotFoundError for a job not held here (or another tenant's)."""
        deadline = self._deadline(timeout_s)
        reply: admin_pb2.JobDetail = await self._unary(
            lambda: self._admin.GetJob(
                admin_pb2.GetJobDetailRequest(
                    job_id=job_id, task_limit=task_limit, task_offset=task_offset
                ),
                timeout=self._remaining(deadline),
                metadata=self._auth,
            ),
            timeout_s,
            retry=True,
        )
        return reply

    async def drain_agent(self, agent_id: str, *, timeout_s: float | None = None) -> None:
        try:
            await self._admin.DrainAgent(
                admin_pb2.DrainAgentRequest(agent_id=agent_id),
                timeout=self._timeout(timeout_s),
                metadata=self._auth,
            )
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e, self.address) from None

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the controller accepts connections (raise UnavailableError otherwise)."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout_s)
        except TimeoutError:
            raise UnavailableError(
                f"the controller at {self.address} did not become reachable in {timeout_s:g} s; "
                "is deerflow-controller running there?"
            ) from None
