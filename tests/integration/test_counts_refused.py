"""Counts are bounded over the wire (issue #17, finding 5): a Hello declaring more handlers
or labels than the limit, a job whose trace context has too many entries, a CancelJob naming
more ids than the job has tasks, each get INVALID_ARGUMENT in one short sentence naming the
limit; unknown CancelJob ids are NOT_FOUND naming a few of them, and nothing is cancelled."""

from __future__ import annotations

import grpc
import pytest

from deerflow_bench import Cluster
from deerflow_controller.client import AsyncClient, InvalidJobError, NotFoundError, Task
from deerflow_controller.core.validation import MAX_HANDLERS_PER_AGENT, MAX_LABELS
from deerflow_protos import agent_pb2, agent_pb2_grpc, client_pb2, client_pb2_grpc, common_pb2

SHORT = 400


async def test_a_hello_declaring_too_many_handlers_or_labels_is_refused(
    controller_alone: Cluster,
) -> None:
    many_handlers = agent_pb2.Hello(
        agent_id="hoarder",
        slots=1,
        handlers=[agent_pb2.HandlerInfo(name=f"h{i}") for i in range(100_000)],
    )
    many_labels = agent_pb2.Hello(
        agent_id="hoarder",
        slots=1,
        handlers=[agent_pb2.HandlerInfo(name="echo")],
        labels={f"k{i}": "v" for i in range(MAX_LABELS + 1)},
    )
    cases = [
        (many_handlers, f"declares 100000 handlers, over the limit of {MAX_HANDLERS_PER_AGENT}"),
        (many_labels, f"declares {MAX_LABELS + 1} labels, over the limit of {MAX_LABELS}"),
    ]
    async with grpc.aio.insecure_channel(controller_alone.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        for hello, fragment in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.Connect(
                    iter([agent_pb2.AgentMessage(hello=hello)]), timeout=30
                ):
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = info.value.details() or ""
            assert fragment in details and len(details) < SHORT, details
    async with AsyncClient(controller_alone.address, timeout_s=30) as client:
        assert not (await client.stats()).agents  # no agent was admitted


async def test_a_job_trace_context_with_too_many_entries_is_invalid_argument(
    controller_alone: Cluster,
) -> None:
    request = client_pb2.SubmitJobRequest(
        tasks=[common_pb2.TaskSpec(id="a", handler="echo")],
        trace_context={f"k{i}": "v" for i in range(10_000)},
    )
    async with grpc.aio.insecure_channel(controller_alone.address) as channel:
        stub = client_pb2_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.SubmitJob(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "the job's trace_context has 10000 entries, over the limit of 16; send fewer"
    )


async def test_task_counts_over_the_limits_are_refused_naming_the_field(
    controller_alone: Cluster,
) -> None:
    cases = [
        (Task("a", "echo", labels={f"k{i}": "v" for i in range(1000)}), "1000 labels"),
        (Task("a", "echo", rate_keys=[f"r{i}" for i in range(17)]), "17 rate keys"),
        (Task("a", "echo", depends_on=["b"] * 100_000), "100000 depends_on entries"),
    ]
    async with AsyncClient(controller_alone.address, timeout_s=30) as client:
        for task, fragment in cases:
            with pytest.raises(InvalidJobError) as info:
                await client.submit([task, Task("b", "echo")])
            assert fragment in info.value.message and len(info.value.message) < SHORT


async def test_a_cancel_naming_a_million_ids_is_refused_and_cancels_nothing(
    controller_alone: Cluster,
) -> None:
    tasks = [Task(f"held{i}", "echo") for i in range(10)]  # no agent: they stay queued
    async with AsyncClient(controller_alone.address, timeout_s=60) as client:
        job = await client.submit(tasks)
        with pytest.raises(InvalidJobError) as info:
            await client.cancel(job.job_id, (f"u{i}" for i in range(1_000_000)))
        message = info.value.message
        assert message.startswith("the CancelJob names 1000000 task ids, over the limit of 10")
        assert "nothing was cancelled" in message and len(message) < SHORT
        with pytest.raises(NotFoundError) as unknown:
            await client.cancel(job.job_id, ["held0", *(f"u{i}" for i in range(8))])
        assert unknown.value.message == (
            f"job {job.job_id!r} has no task 'u0', 'u1', 'u2' and 5 more; nothing was cancelled"
        )
        status = await client.get_job(job.job_id)
        assert "CANCELLED" not in status.by_state, status.by_state
        assert await client.cancel(job.job_id, ["held0", "held1"]) == 2
