"""A drop-in's call (one task as a job of its own) opens its result stream together with the
submit (``WatchJobRequest.wait_for_submit_s``), not after the submit's reply: one round trip less
before a result can arrive (docs/BENCHMARKS.md, issue #19 item 2).

Served in-process without agents, so the job waits: the real JobService, subclassed only to
record the WatchJob requests it is given."""

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
        self.watches: list[client_pb2.WatchJobRequest] = []
        self.watched = asyncio.Event()

    async def WatchJob(
        self, request: client_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.TaskEventBatch]:
        self.watches.append(request)
        self.watched.set()
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
async def test_a_drop_in_call_opens_its_result_stream_with_the_submit(
    served: tuple[str, RecordingJobService], timeout_s: float | None
) -> None:
    address, service = served
    conn = ClusterConnection(address)
    try:
        call = asyncio.ensure_future(
            conn.arun_task(Task("t", "echo", b"x"), name="probe", timeout_s=timeout_s)
        )
        await asyncio.wait_for(service.watched.wait(), 30)
        (request,) = service.watches
        if timeout_s is None:
            assert request.wait_for_submit_s > 0  # sent with the submit, not after its reply
        else:
            assert request.wait_for_submit_s == 0  # a bounded wait opens its own stream
        assert request.filter == client_pb2.TERMINAL
        # Cancelling the caller still cancels the job on the cluster (and ends both calls).
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await cancelled(service.shell, request.job_id)
    finally:
        conn.close()
