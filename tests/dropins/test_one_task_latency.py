"""A drop-in's call (one task as a job of its own) travels on the client's Session stream: its
submit and its result are messages on a stream already open, with no SubmitJob or WatchJob call
of their own (docs/BENCHMARKS.md, issue #19 item 2), whether or not the call has a timeout; a
caller who gives up still cancels the job.

Served in-process without agents, so the job waits: the real JobService, subclassed only to
record the calls it is given."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from deerflow_controller.client import Task
from deerflow_controller.config import ControllerConfig
from deerflow_controller.core.model import TaskState
from deerflow_controller.service.job_service import JobService
from deerflow_controller.service.shell import Shell
from deerflow_dropins._cluster import ClusterConnection
from deerflow_protos import client_pb2, client_pb2_grpc, common_pb2


class RecordingJobService(JobService):
    def __init__(self, shell: Shell) -> None:
        super().__init__(shell)
        self.on_session: list[client_pb2.SessionRequest] = []
        self.calls: list[str] = []
        self.sent = asyncio.Event()

    async def Session(
        self,
        request_iterator: AsyncIterator[client_pb2.SessionRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        self.calls.append("Session")

        async def recorded() -> AsyncIterator[client_pb2.SessionRequest]:
            async for request in request_iterator:
                self.on_session.append(request)
                self.sent.set()
                yield request

        await super().Session(recorded(), context)

    async def SubmitJob(
        self, request: client_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> client_pb2.SubmitJobResponse:
        self.calls.append("SubmitJob")
        return await super().SubmitJob(request, context)

    async def WatchJob(
        self, request: client_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.TaskEventBatch]:
        self.calls.append("WatchJob")
        async for batch in super().WatchJob(request, context):
            yield batch


async def cancelled(shell: Shell, job_id: str) -> None:
    """Until the job's every task is CANCELLED (a condition polled, bounded)."""
    for _ in range(2000):
        job = shell.job(job_id)
        if job is not None and job.done:
            assert {t.state for t in job.tasks.values()} == {TaskState.CANCELLED}
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"job {job_id} was not cancelled")


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, RecordingJobService]]:
    service = RecordingJobService(Shell(ControllerConfig()))
    server = grpc.aio.server()
    client_pb2_grpc.add_JobServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", service
    finally:
        await server.stop(0)


@pytest.mark.parametrize("timeout_s", [None, 30.0])
async def test_a_drop_in_call_travels_on_the_session_stream(
    served: tuple[str, RecordingJobService], timeout_s: float | None
) -> None:
    address, service = served
    conn = ClusterConnection(address)
    try:
        call = asyncio.ensure_future(
            conn.arun_task(Task("t", "echo", b"x"), name="probe", timeout_s=timeout_s)
        )
        await asyncio.wait_for(service.sent.wait(), 30)
        (request,) = service.on_session
        assert request.WhichOneof("body") == "submit" and request.filter == client_pb2.TERMINAL
        job_id = request.submit.job_id
        assert job_id and [t.id for t in request.submit.tasks] == ["t"]
        for _ in range(2000):  # until accepted (a condition polled, bounded)
            if service.shell.job(job_id) is not None:
                break
            await asyncio.sleep(0.005)
        assert service.calls == ["Session"]  # no SubmitJob, no WatchJob
        # Cancelling the caller still cancels the job on the cluster.
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await cancelled(service.shell, job_id)
    finally:
        conn.close()
