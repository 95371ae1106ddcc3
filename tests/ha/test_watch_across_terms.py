"""A watch open on a controller that stops leading must end with a code the SDK resumes on
(UNAVAILABLE), never NOT_FOUND: the job lives on with the next leader. The controller's job
service is served in-process on loopback; the term change is what the leadership loop does (a
fresh scheduler, then the restored job touched in it)."""

from __future__ import annotations

import grpc
import pytest

from deerflow_controller.config import ControllerConfig
from deerflow_controller.job_service import JobService
from deerflow_controller.model import TaskSpec
from deerflow_controller.ratelimit import RateLimiter
from deerflow_controller.scheduler import Scheduler
from deerflow_controller.shell import Shell
from deerflow_protos import client_pb2, client_pb2_grpc, common_pb2


async def test_a_watch_across_a_lost_leadership_ends_unavailable_not_not_found() -> None:
    shell = Shell(ControllerConfig())
    server = grpc.aio.server()
    client_pb2_grpc.add_JobServiceServicer_to_server(JobService(shell), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = client_pb2_grpc.JobServiceStub(channel)
            request = client_pb2.SubmitJobRequest(job_id="job-1")
            request.tasks.add(id="a", handler="echo", payload=b"x")
            await stub.SubmitJob(request)
            call = stub.WatchJob(client_pb2.WatchJobRequest(job_id="job-1"))
            first = await call.read()  # no agent: the task waits QUEUED
            assert [e.state for e in first.events] == [common_pb2.QUEUED]

            # The term ends: an empty scheduler; the next term restores the job and touches it.
            config = shell.config
            shell.scheduler = Scheduler(config.scheduler, limiter=RateLimiter(config.limits))
            shell.scheduler.submit("job-1", "", [TaskSpec("a", "echo", b"x")], shell.clock())
            shell.flush()

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call.read()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "lost the leadership" in (caught.value.details() or "")
    finally:
        await server.stop(0)
