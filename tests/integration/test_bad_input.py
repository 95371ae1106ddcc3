"""Bad input gets a gRPC status with an actionable sentence; the controller keeps serving."""

from __future__ import annotations

import grpc
import pytest

from deerflow_bench import Cluster
from deerflow_controller.client import (
    AsyncClient,
    InvalidJobError,
    NotFoundError,
    PayloadTooLargeError,
    Task,
)

from .conftest import ClusterFactory, connect

BAD_JOBS: list[tuple[str, list[Task], str]] = [
    ("empty", [], "no tasks"),
    ("duplicate ids", [Task("a", "echo"), Task("a", "echo")], "'a' appears more than once"),
    (
        "cycle",
        [
            Task("a", "echo", depends_on=["c"]),
            Task("b", "echo", depends_on=["a"]),
            Task("c", "echo", depends_on=["b"]),
        ],
        "cycle",
    ),
    ("unknown dependency", [Task("a", "echo", depends_on=["zzz"])], "'a' depends on 'zzz'"),
    ("negative timeout", [Task("slow", "sleep", timeout_s=-1)], "'slow' has a negative timeout"),
    ("no handler", [Task("nameless", "")], "'nameless' names no handler"),
]


@pytest.fixture
async def cluster(make_cluster: ClusterFactory) -> Cluster:
    c = make_cluster(1, controller_args=("--max-payload-bytes", "1024"))
    await c.__aenter__()
    return c


@pytest.mark.parametrize(("case", "tasks", "fragment"), BAD_JOBS, ids=[b[0] for b in BAD_JOBS])
async def test_a_malformed_job_is_refused_with_invalid_argument_naming_the_problem(
    cluster: Cluster, case: str, tasks: list[Task], fragment: str
) -> None:
    client = await connect(cluster)
    with pytest.raises(InvalidJobError) as info:
        await client.submit(tasks)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in info.value.message
    # The controller keeps serving other jobs.
    ok = await client.submit([Task("fine", "echo", b"still here")])
    assert (await ok.result("fine", timeout_s=30)).output == b"still here"
    await client.close()


async def test_an_oversized_payload_is_refused_with_resource_exhausted(cluster: Cluster) -> None:
    client = await connect(cluster)
    with pytest.raises(PayloadTooLargeError) as info:
        await client.submit([Task("small", "echo", b"x"), Task("big", "echo", b"x" * 2048)])
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "'big'" in info.value.message and "1024" in info.value.message
    stats = await client.stats()
    assert stats.submitted == 0  # all-or-nothing: 'small' was not accepted either
    await client.close()


async def test_watching_or_cancelling_an_unknown_job_is_not_found(cluster: Cluster) -> None:
    async with AsyncClient(cluster.address) as client:
        with pytest.raises(NotFoundError, match="no job 'nope'"):
            await client.wait("nope", timeout_s=10)
        with pytest.raises(NotFoundError):
            await client.cancel("nope")
        job = await client.submit([Task("t", "echo")])
        with pytest.raises(NotFoundError, match="no task 'other'"):
            await client.cancel(job.job_id, ["other"])


async def test_a_stream_that_does_not_start_with_hello_is_refused(cluster: Cluster) -> None:
    from deerflow_protos import agent_pb2, agent_pb2_grpc

    async with grpc.aio.insecure_channel(cluster.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        call = stub.Connect(
            iter([agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(running=0))])
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Hello" in (info.value.details() or "")
