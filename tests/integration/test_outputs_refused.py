"""The outputs the controller keeps for clients are bounded in all (issue #17, finding 5):
over ``--max-output-bytes``, finished jobs are forgotten early (a later GetJob says so), and an
output that running jobs leave no room for fails its task RESOURCE_EXHAUSTED with a sentence;
a job being read as it runs gets every result."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from deerflow_bench import Cluster
from deerflow_controller.client import NotFoundError, Task

from .conftest import connect

KB = 1000


async def test_outputs_over_the_budget_forget_finished_jobs_first_then_fail_the_task(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(
        1,
        agent_args=("--handler", "deerflow_bench.handlers:blob"),
        controller_args=("--max-output-bytes", str(1 << 20)),
    )
    await cluster.__aenter__()
    async with await connect(cluster) as client:
        first = await client.submit([Task(f"a{i}", "blob", {"bytes": 200 * KB}) for i in range(4)])
        assert all(r.ok for r in (await first.wait(timeout_s=60)).values())
        # 800 KB kept; 400 KB more goes over 1 MiB: the finished job is forgotten for them.
        second = await client.submit([Task(f"b{i}", "blob", {"bytes": 200 * KB}) for i in range(2)])
        results = await second.wait(timeout_s=60)
        assert [len(r.output) for r in results.values()] == [200 * KB, 200 * KB]
        with pytest.raises(NotFoundError) as info:
            await client.get_job(first.job_id)
        assert "--max-output-bytes" in str(info.value)
        # Alone over the budget: no finished job can make room, the task fails.
        big = await client.submit([Task("big", "blob", {"bytes": 1100 * KB})])
        result = (await big.wait(timeout_s=60))["big"]
        assert not result.ok and result.error_kind == "RESOURCE_EXHAUSTED"
        assert "over its budget of 1048576 bytes (--max-output-bytes)" in (result.error or "")
        assert (await client.get_job(second.job_id)).total == 2  # running jobs' room only
