"""Unfinished work is bounded per tenant and in all (issue #17, finding 5): a job that would
go over ``--max-queued-tasks``, ``--max-queued-tasks-per-tenant`` or ``--max-jobs-per-tenant``
is refused whole, RESOURCE_EXHAUSTED with a sentence saying to retry when some finish; what
was accepted before stays, and room comes back as tasks end."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from deerflow_bench import Cluster
from deerflow_controller.client import AsyncClient
from deerflow_protos import client_pb2, client_pb2_grpc, common_pb2


def _job(tenant: str, n: int) -> client_pb2.SubmitJobRequest:
    return client_pb2.SubmitJobRequest(
        tasks=[common_pb2.TaskSpec(id=f"t{i}", handler="echo", tenant=tenant) for i in range(n)]
    )


async def test_jobs_over_the_queued_work_limits_are_refused_and_nothing_accepted_is_lost(
    make_cluster: Callable[..., Cluster],
) -> None:
    limits = ("--max-queued-tasks", "5", "--max-queued-tasks-per-tenant", "3")
    cluster = make_cluster(0, controller_args=(*limits, "--max-jobs-per-tenant", "2"))
    await cluster.__aenter__()  # no agent: every task stays unfinished until cancelled
    async with grpc.aio.insecure_channel(cluster.address) as channel:
        stub = client_pb2_grpc.JobServiceStub(channel)

        async def refused(request: client_pb2.SubmitJobRequest) -> str:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.SubmitJob(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = info.value.details() or ""
            assert details.endswith("retry when some finish") and len(details) < 300, details
            return details

        first = (await stub.SubmitJob(_job("a", 2), timeout=30)).job_id
        second = (await stub.SubmitJob(_job("a", 1), timeout=30)).job_id
        assert "tenant 'a' has 3 unfinished tasks and this job adds 1, over the limit of 3" in (
            await refused(_job("a", 1))
        )
        assert "holds 3 unfinished tasks and this job adds 3, over its limit of 5" in (
            await refused(_job("b", 3))
        )
        third = (await stub.SubmitJob(_job("b", 1), timeout=30)).job_id
        async with AsyncClient(cluster.address, timeout_s=30) as client:
            await client.cancel(first)
            await client.cancel(second)
            # Every task of 'a' ended: room again, for its tasks and for its jobs.
            fourth = (await stub.SubmitJob(_job("a", 1), timeout=30)).job_id
            fifth = (await stub.SubmitJob(_job("a", 1), timeout=30)).job_id
            assert "tenant 'a' has 2 unfinished jobs, the limit per tenant" in (
                await refused(_job("a", 1))
            )
            for job, total in ((first, 2), (second, 1), (third, 1), (fourth, 1), (fifth, 1)):
                status = await client.get_job(job)  # nothing accepted was lost
                assert status.total == total
