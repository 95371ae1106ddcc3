"""The asyncio client: submit jobs, stream their results, cancel, inspect."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterable
from types import TracebackType

import grpc
from opentelemetry.trace import TracerProvider

from deerflow_common import channel_options
from deerflow_protos import admin_pb2, admin_pb2_grpc, client_pb2, client_pb2_grpc

from ._errors import DeerflowError, UnavailableError, from_rpc_error
from ._tracing import submit_span
from ._types import Task, TaskEvent, TaskResult

DEFAULT_ADDRESS = "127.0.0.1:7400"

_RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL})


class AsyncClient:
    """A connection to the leader controller.

    Every unary call takes ``timeout_s`` (default: the client's ``timeout_s``); streams run until
    the job is done unless given one. Errors are :class:`DeerflowError` subclasses carrying the
    gRPC status. Use as ``async with AsyncClient(addr) as client: ...``.

    Each submit makes a ``deerflow.submit`` span through ``tracer_provider`` (default:
    OpenTelemetry's global provider, a no-op unless the application configured one) and sends
    its W3C context with every task, so each task's trace runs on through the controller and the
    agent.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout_s: float | None = 30.0,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.tracer_provider = tracer_provider
        self._channel = grpc.aio.insecure_channel(address, options=channel_options())
        self._jobs = client_pb2_grpc.JobServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)

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
        await self._channel.close()

    def _timeout(self, timeout_s: float | None) -> float | None:
        return self.timeout_s if timeout_s is None else timeout_s

    # ----------------------------------------------------------------- jobs

    async def submit(
        self,
        tasks: Iterable[Task],
        *,
        job_id: str = "",
        name: str = "",
        timeout_s: float | None = None,
    ) -> JobHandle:
        """Submit a job (a DAG through ``depends_on``). Returns once the controller accepted it.

        Raises InvalidJobError / PayloadTooLargeError when refused; nothing is accepted then.
        Passing ``job_id`` makes the submit idempotent: resubmitting the same tasks is a no-op."""
        with submit_span(self.tracer_provider, job_id, name) as (span, trace_context):
            request = client_pb2.SubmitJobRequest(job_id=job_id, name=name)
            add = request.tasks.add
            if not trace_context:
                for task in tasks:
                    task.fill_proto(add())
            else:
                # Usually just traceparent: one map assignment per task is the cheapest.
                items = list(trace_context.items())
                for task in tasks:
                    spec = add()
                    task.fill_proto(spec)
                    tc = spec.trace_context
                    for k, v in items:
                        tc[k] = v
            span.set_attribute("deerflow.tasks", len(request.tasks))
            try:
                reply = await self._jobs.SubmitJob(request, timeout=self._timeout(timeout_s))
            except grpc.aio.AioRpcError as e:
                raise from_rpc_error(e, self.address) from None
            span.set_attribute("deerflow.job.id", reply.job_id)
        return JobHandle(self, reply.job_id, reply.accepted)

    async def events(
        self,
        job_id: str,
        *,
        terminal_only: bool = False,
        after_seq: int = 0,
        timeout_s: float | None = None,
        reconnect: bool = True,
    ) -> AsyncIterator[TaskEvent]:
        """Stream a job's events in order until the job is done.

        When the stream breaks (controller restart, failover) it resumes from the last seq seen,
        so no event is delivered twice and none is skipped."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        flt = client_pb2.TERMINAL if terminal_only else client_pb2.ALL
        backoff = 0.1
        while True:
            remaining = None if deadline is None else max(0.001, deadline - loop.time())
            call = self._jobs.WatchJob(
                client_pb2.WatchJobRequest(job_id=job_id, after_seq=after_seq, filter=flt),
                timeout=remaining,
            )
            try:
                async for batch in call:
                    backoff = 0.1
                    for ev in batch.events:
                        after_seq = ev.seq
                        yield TaskEvent.from_proto(ev)
                return
            except grpc.aio.AioRpcError as e:
                if not reconnect or e.code() not in _RESUMABLE:
                    raise from_rpc_error(e, self.address) from None
                if deadline is not None and loop.time() >= deadline:
                    raise from_rpc_error(e, self.address) from None
            finally:
                call.cancel()
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 2.0)

    async def results(
        self, job_id: str, *, timeout_s: float | None = None
    ) -> AsyncIterator[TaskResult]:
        """Yield each task's terminal result as it completes, exactly once per task id."""
        seen: set[str] = set()
        async for ev in self.events(job_id, terminal_only=True, timeout_s=timeout_s):
            if ev.terminal and ev.task_id not in seen:
                seen.add(ev.task_id)
                yield TaskResult.from_event(ev)

    async def result(
        self, job_id: str, task_id: str, *, timeout_s: float | None = None
    ) -> TaskResult:
        """Wait for one task's terminal result (does not raise if it failed: see ``ok``)."""
        async for r in self.results(job_id, timeout_s=timeout_s):
            if r.task_id == task_id:
                return r
        raise DeerflowError(f"job {job_id!r} finished without a result for task {task_id!r}")

    async def wait(self, job_id: str, *, timeout_s: float | None = None) -> dict[str, TaskResult]:
        """Wait for the whole job; return every task's result keyed by task id."""
        return {r.task_id: r async for r in self.results(job_id, timeout_s=timeout_s)}

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
        try:
            reply = await self._jobs.CancelJob(request, timeout=self._timeout(timeout_s))
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e, self.address) from None
        return int(reply.cancelled)

    async def get_job(self, job_id: str, *, timeout_s: float | None = None) -> client_pb2.JobStatus:
        try:
            reply: client_pb2.JobStatus = await self._jobs.GetJob(
                client_pb2.GetJobRequest(job_id=job_id), timeout=self._timeout(timeout_s)
            )
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e, self.address) from None
        return reply

    async def get_task(
        self, job_id: str, task_id: str, *, timeout_s: float | None = None
    ) -> client_pb2.TaskStatus:
        try:
            task: client_pb2.TaskStatus = await self._jobs.GetTask(
                client_pb2.GetTaskRequest(job_id=job_id, task_id=task_id),
                timeout=self._timeout(timeout_s),
            )
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e, self.address) from None
        return task

    # ----------------------------------------------------------------- admin

    async def stats(self, *, timeout_s: float | None = None) -> admin_pb2.Stats:
        try:
            stats: admin_pb2.Stats = await self._admin.GetStats(
                admin_pb2.GetStatsRequest(), timeout=self._timeout(timeout_s)
            )
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e, self.address) from None
        return stats

    async def agents(
        self, *, wait_for: int = 0, timeout_s: float | None = None
    ) -> list[admin_pb2.AgentInfo]:
        """Connected agents; with ``wait_for`` blocks until that many are connected."""
        try:
            reply = await self._admin.ListAgents(
                admin_pb2.ListAgentsRequest(wait_for=wait_for),
                timeout=self._timeout(timeout_s),
                wait_for_ready=wait_for > 0,
            )
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e, self.address) from None
        return list(reply.agents)

    async def drain_agent(self, agent_id: str, *, timeout_s: float | None = None) -> None:
        try:
            await self._admin.DrainAgent(
                admin_pb2.DrainAgentRequest(agent_id=agent_id), timeout=self._timeout(timeout_s)
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


class JobHandle:
    """A submitted job: iterate its results, wait for it, cancel it."""

    def __init__(self, client: AsyncClient, job_id: str, accepted: int) -> None:
        self.client = client
        self.job_id = job_id
        self.accepted = accepted

    def results(self, *, timeout_s: float | None = None) -> AsyncIterator[TaskResult]:
        return self.client.results(self.job_id, timeout_s=timeout_s)

    def events(self, *, timeout_s: float | None = None) -> AsyncIterator[TaskEvent]:
        return self.client.events(self.job_id, timeout_s=timeout_s)

    async def result(self, task_id: str, *, timeout_s: float | None = None) -> TaskResult:
        return await self.client.result(self.job_id, task_id, timeout_s=timeout_s)

    async def wait(self, *, timeout_s: float | None = None) -> dict[str, TaskResult]:
        return await self.client.wait(self.job_id, timeout_s=timeout_s)

    async def cancel(self, task_ids: Iterable[str] = (), *, reason: str = "") -> int:
        return await self.client.cancel(self.job_id, task_ids, reason=reason)
