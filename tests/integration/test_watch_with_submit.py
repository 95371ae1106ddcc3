"""A job's watch opened together with its submit (issue #19 item 2): ``WatchJobRequest.
wait_for_submit_s`` lets the controller wait for a job it does not know yet, so the SDK's
``submit(watch=...)`` sends both at once and the stream is ready when the first result is.

The waiting itself is checked on a controller served in-process (its shell shows the watch
registered before the job exists, and a term's end in HA mode reaches a waiting watch); the
SDK's path on real controller and agent processes."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from deerflow_bench import Cluster
from deerflow_controller.client import AsyncClient, InvalidJobError, Task
from deerflow_controller.config import ControllerConfig
from deerflow_controller.core.scheduler import Scheduler
from deerflow_controller.ratelimit import RateLimiter
from deerflow_controller.service.job_service import JobService
from deerflow_controller.service.shell import Shell
from deerflow_protos import client_pb2, client_pb2_grpc, common_pb2

from .conftest import Served, connect, serve_in_process


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for s in serve_in_process(ControllerConfig()):
        yield s


async def registered(shell: Shell, job_id: str) -> None:
    """Until the shell lists a watcher of ``job_id`` (a condition polled, bounded)."""
    for _ in range(1000):
        if job_id in shell._watchers:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"no watch of {job_id} registered")


def submit_request(job_id: str) -> client_pb2.SubmitJobRequest:
    request = client_pb2.SubmitJobRequest(job_id=job_id)
    request.tasks.add(id="a", handler="echo", payload=b"x")
    return request


async def test_a_watch_opened_before_its_job_waits_for_the_submit(served: Served) -> None:
    call = served.stub.WatchJob(client_pb2.WatchJobRequest(job_id="later", wait_for_submit_s=30))
    await registered(served.shell, "later")
    assert served.shell.job("later") is None  # it is waiting, not refused
    await served.stub.SubmitJob(submit_request("later"))
    first = await call.read()  # no agent: the task waits QUEUED
    assert [(e.job_id, e.state) for e in first.events] == [("later", common_pb2.QUEUED)]
    call.cancel()


async def test_a_watch_whose_job_never_comes_is_not_found_after_its_wait(
    served: Served,
) -> None:
    call = served.stub.WatchJob(client_pb2.WatchJobRequest(job_id="never", wait_for_submit_s=0.2))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    details = caught.value.details() or ""
    assert "no job 'never'" in details and "within the 0.2 s the watch waited" in details
    assert "Traceback" not in details and len(details) < 400
    assert "never" not in served.shell._watchers


async def test_a_waiting_watch_answers_before_its_callers_deadline(served: Served) -> None:
    call = served.stub.WatchJob(
        client_pb2.WatchJobRequest(job_id="never", wait_for_submit_s=30), timeout=0.5
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # not DEADLINE_EXCEEDED
    assert "or the call's deadline" in (caught.value.details() or "")


@pytest.mark.parametrize("wait_s", [-1.0, 61.0, math.nan, math.inf])
async def test_a_wait_out_of_range_is_refused_with_one_sentence(
    served: Served, wait_s: float
) -> None:
    call = served.stub.WatchJob(client_pb2.WatchJobRequest(job_id="j", wait_for_submit_s=wait_s))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert "wait_for_submit_s" in details and "from 0 to 60" in details
    assert "\n" not in details and len(details) < 200


async def test_a_waiting_watch_ends_unavailable_when_the_term_ends(served: Served) -> None:
    """The job may be submitted to the next leader: the SDK must resume there, not give up."""
    call = served.stub.WatchJob(client_pb2.WatchJobRequest(job_id="moved", wait_for_submit_s=30))
    await registered(served.shell, "moved")
    assert served.gate.term is not None
    served.gate.term.ended.set()
    served.gate.term = None
    config = served.shell.config
    served.shell.replace_scheduler(Scheduler(config.scheduler, limiter=RateLimiter(config.limits)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_without_session_the_sdk_reads_the_watch_it_opened_with_the_submit(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The SDK's path to a controller that does not serve Session (it predates it; the SDK
    marks it so on its first UNIMPLEMENTED, as here): SubmitJob with a WatchJob alongside."""
    cluster = make_cluster(1, slots=4)
    await cluster.__aenter__()
    async with await connect(cluster) as client:
        client._sessions._unserved.add(client.address)
        job = await client.submit([Task("t", "echo", b"x")], watch="results")
        opened = job._opened
        assert opened is not None and opened[0] == client_pb2.TERMINAL
        results = await job.wait()
        assert results["t"].ok and results["t"].output == b"x"
        assert job._opened is None and opened[1].done()

        job = await client.submit([Task("u", "echo", b"y")], watch="events")
        states = [ev.state async for ev in job.events()]
        assert states[-1] == "SUCCEEDED" and "DISPATCHED" in states

        # A reader of another kind opens its own stream; the unused one is cancelled.
        job = await client.submit([Task("v", "echo", b"z")], watch="events")
        opened = job._opened
        assert (await job.result("v")).output == b"z"
        assert opened is not None and opened[1].cancelled()


async def test_a_refused_submit_with_a_watch_is_refused_as_before(
    make_cluster: Callable[..., Cluster],
) -> None:
    """The refusal is the submit's own sentence (the watch opened with it is cancelled)."""
    cluster = make_cluster(0)
    await cluster.__aenter__()
    async with AsyncClient(cluster.address, timeout_s=30) as client:
        with pytest.raises(InvalidJobError) as caught:
            await client.submit([Task("a", "echo"), Task("a", "echo")], watch="results")
        assert "'a'" in str(caught.value) and "\n" not in str(caught.value)
        job = await client.submit([Task("b", "echo")], watch="results")  # no agent: not done
        assert job._opened is not None and not job._opened[1].done()


class _OldController(JobService):
    """A controller from before ``wait_for_submit_s`` (and Session): its WatchJob answers an
    unknown job NOT_FOUND at once; its SubmitJob is held until one watch was so answered (the
    order the SDK meets when its watch overtakes its submit)."""

    Session = client_pb2_grpc.JobServiceServicer.Session  # UNIMPLEMENTED

    def __init__(self, shell: Shell) -> None:
        super().__init__(shell)
        self.refused = asyncio.Event()

    async def SubmitJob(
        self, request: client_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> client_pb2.SubmitJobResponse:
        await self.refused.wait()
        return await super().SubmitJob(request, context)

    async def WatchJob(
        self, request: client_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.TaskEventBatch]:
        request.wait_for_submit_s = 0  # an unknown field to it
        if self.shell.job(request.job_id) is None:
            self.refused.set()
        async for batch in super().WatchJob(request, context):
            yield batch


async def test_against_a_controller_without_the_wait_the_sdk_looks_again_after_the_submit() -> None:
    shell = Shell(ControllerConfig())
    service = _OldController(shell)
    server = grpc.aio.server()
    client_pb2_grpc.add_JobServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with AsyncClient(f"127.0.0.1:{port}", timeout_s=30) as client:
            job = await client.submit([Task("t", "echo", b"x")], watch="events")
            assert service.refused.is_set()  # its watch was answered NOT_FOUND first
            async for ev in job.events():  # no agent: the task waits QUEUED
                assert (ev.task_id, ev.state) == ("t", "QUEUED")
                break
    finally:
        await server.stop(0)
