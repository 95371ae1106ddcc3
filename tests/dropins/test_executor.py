"""The fork's ParallelExecutor drop-in against a real cluster: one controller and one agent with
one slot and no prefetch, so the order the controller runs tasks in is visible."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from deerflow_bench import Cluster
from deerflow_controller.client import AsyncClient
from deerflow_dropins.executor import (
    DependencyFailedError,
    ParallelExecutor,
    ParallelTask,
    TaskPriority,
    TaskStatus,
    cluster_task,
    create_parallel_executor,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    async with Cluster(1, agent_args=["--slots", "1"], controller_args=["--prefetch", "0"]) as c:
        async with AsyncClient(c.address) as client:
            await client.agents(wait_for=1, timeout_s=30)
        yield c


def executor_for(cluster: Cluster, **kwargs: Any) -> ParallelExecutor:
    return create_parallel_executor(max_concurrent_tasks=3, address=cluster.address, **kwargs)


async def dispatch_order(cluster: Cluster, job_id: str) -> list[str]:
    """The job's tasks in the order the controller sent them to the agent (fast tasks may go
    from DISPATCHED to SUCCEEDED with no RUNNING event between)."""
    async with AsyncClient(cluster.address) as client:
        order = [ev.task_id async for ev in client.events(job_id) if ev.state == "DISPATCHED"]
    return list(dict.fromkeys(order))


# --------------------------------------------------------------------- the fork's own use


async def test_the_forks_step_tasks_run_at_once_with_no_three_wide_cap(cluster: Cluster) -> None:
    started: list[str] = []
    all_started = asyncio.Event()

    async def execute_single_step(
        state: dict[str, Any], config: object, step: str, kind: str
    ) -> dict[str, str]:
        started.append(step)
        if len(started) == 5:
            all_started.set()
        await all_started.wait()  # five at once, or this never returns
        return {"original_step_title": step, "status": "completed", "agent": kind}

    executor = executor_for(cluster)
    executor.add_tasks(
        ParallelTask(
            task_id=f"step {i}",
            func=execute_single_step,
            args=({"plan": "p"}, None, f"step {i}", "researcher"),
            priority=TaskPriority.NORMAL,
        )
        for i in range(5)
    )
    results = await asyncio.wait_for(executor.execute_all(), 10)

    assert sorted(results) == [f"step {i}" for i in range(5)]
    assert all(r.status.value == "completed" for r in results.values())
    assert results["step 3"].result["original_step_title"] == "step 3"
    assert executor.job_ids == []  # local callables never touch the cluster


# --------------------------------------------------------------------- cluster tasks


async def test_cluster_tasks_of_one_execute_all_are_one_job_run_highest_priority_first(
    cluster: Cluster,
) -> None:
    executor = executor_for(cluster)
    for name, priority in [("low", "LOW"), ("crit", "CRITICAL"), ("norm", "NORMAL")]:
        executor.add_task(
            ParallelTask(
                task_id=name,
                func=cluster_task("echo"),
                args=({"task": name},),
                priority=TaskPriority[priority],
            )
        )
    executor.add_task(
        ParallelTask(
            "high", cluster_task("echo"), kwargs={"task": "high"}, priority=TaskPriority.HIGH
        )
    )

    results = await executor.execute_all()

    assert len(executor.job_ids) == 1
    assert {k: (r.status, r.result) for k, r in results.items()} == {
        name: (TaskStatus.COMPLETED, {"task": name}) for name in ("low", "crit", "norm", "high")
    }
    assert await dispatch_order(cluster, executor.job_ids[0]) == ["crit", "high", "norm", "low"]


async def test_a_cluster_task_runs_after_its_dependencies(cluster: Cluster) -> None:
    executor = executor_for(cluster)
    executor.add_tasks(
        [
            ParallelTask("report", cluster_task("echo"), ("r",), dependencies=["a", "b"]),
            ParallelTask("a", cluster_task("echo"), ("a",), priority=TaskPriority.LOW),
            ParallelTask("b", cluster_task("echo"), ("b",), priority=TaskPriority.LOW),
        ]
    )

    results = await executor.execute_all()

    assert all(r.status is TaskStatus.COMPLETED for r in results.values())
    assert results["report"].result == "r"
    assert (await dispatch_order(cluster, executor.job_ids[0]))[-1] == "report"


async def test_a_failed_cluster_dependency_fails_its_dependents_naming_it(cluster: Cluster) -> None:
    executor = executor_for(cluster)
    executor.add_tasks(
        [
            ParallelTask("bad", cluster_task("sleep"), kwargs={"no": "seconds"}),
            ParallelTask("after", cluster_task("echo"), ("x",), dependencies=["bad"]),
            ParallelTask("free", cluster_task("echo"), ("y",)),
        ]
    )

    results = await executor.execute_all()

    assert results["bad"].status is TaskStatus.FAILED
    assert "seconds" in str(results["bad"].error)
    after = results["after"]
    assert after.status is TaskStatus.FAILED
    assert isinstance(after.error, DependencyFailedError)
    assert after.error.dependency == "bad"
    assert "dependency 'bad' did not complete" in str(after.error)
    assert results["free"].status is TaskStatus.COMPLETED


async def test_a_cluster_attempt_is_cut_at_its_timeout_and_retried_max_retries_times(
    cluster: Cluster,
) -> None:
    executor = executor_for(cluster)
    executor.add_task(
        ParallelTask(
            "slow", cluster_task("sleep"), kwargs={"seconds": 30}, timeout=0.3, max_retries=1
        )
    )

    results = await asyncio.wait_for(executor.execute_all(), 15)

    slow = results["slow"]
    assert slow.status is TaskStatus.FAILED
    assert isinstance(slow.error, TimeoutError)
    assert slow.retry_count == 1
    assert slow.total_delay_time > 0  # the pause before the retry


async def test_a_cluster_task_waiting_on_a_local_one_is_submitted_when_it_completes(
    cluster: Cluster,
) -> None:
    async def plan() -> dict[str, list[str]]:
        return {"queries": ["q1"]}

    executor = executor_for(cluster)
    executor.add_tasks(
        [
            ParallelTask("plan", plan),
            ParallelTask("search", cluster_task("echo"), ("q1",), dependencies=["plan"]),
            ParallelTask("other", cluster_task("echo"), ("o",)),
        ]
    )

    results = await executor.execute_all()

    assert [r.status for r in results.values()] == [TaskStatus.COMPLETED] * 3
    assert len(executor.job_ids) == 2  # "other" at once, "search" once "plan" completed


async def test_a_bad_cluster_argument_fails_that_task_only(cluster: Cluster) -> None:
    executor = executor_for(cluster)
    executor.add_tasks(
        [
            ParallelTask("two", cluster_task("echo"), ("a", "b")),
            ParallelTask("one", cluster_task("echo"), ("a",)),
        ]
    )

    results = await executor.execute_all()

    assert isinstance(results["two"].error, TypeError)
    assert "one positional argument" in str(results["two"].error)
    assert results["one"].status is TaskStatus.COMPLETED


async def test_cancelling_execute_all_cancels_its_cluster_job(cluster: Cluster) -> None:
    submitted = asyncio.Event()

    async def gate() -> None:  # starts once the cluster tasks of this round were submitted
        submitted.set()
        await asyncio.Event().wait()

    executor = executor_for(cluster)
    executor.add_tasks(
        [
            ParallelTask("slow", cluster_task("sleep"), kwargs={"seconds": 30}),
            ParallelTask("gate", gate),
        ]
    )
    run = asyncio.create_task(executor.execute_all())
    await submitted.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    async with AsyncClient(cluster.address) as client:
        result = await client.result(executor.job_ids[0], "slow", timeout_s=10)
    assert result.state == "CANCELLED"


# --------------------------------------------------------------------- local tasks


async def test_local_tasks_start_highest_priority_first_under_a_local_cap() -> None:
    order: list[str] = []

    async def record(name: str) -> str:
        order.append(name)
        return name

    executor = ParallelExecutor(local_concurrency=1)
    for name, priority in [("low", "LOW"), ("crit", "CRITICAL"), ("norm", "NORMAL")]:
        executor.add_task(ParallelTask(name, record, (name,), priority=TaskPriority[priority]))
    executor.add_task(ParallelTask("after", record, ("after",), dependencies=["low"]))

    await executor.execute_all()

    assert order == ["crit", "norm", "low", "after"]


async def test_a_failed_local_dependency_fails_dependents_at_once_and_spares_the_rest() -> None:
    async def broken() -> None:
        raise ValueError("bad plan")

    async def fine() -> str:
        return "ok"

    executor = ParallelExecutor()
    executor.add_tasks(
        [
            ParallelTask("plan", broken),
            ParallelTask("step", fine, dependencies=["plan"]),
            ParallelTask("report", fine, dependencies=["step"]),
            ParallelTask("side", fine),
        ]
    )

    results = await asyncio.wait_for(executor.execute_all(), 5)

    assert results["plan"].retry_count == 0  # a ValueError is not transient
    assert isinstance(results["step"].error, DependencyFailedError)
    assert "'plan' did not complete: bad plan" in str(results["step"].error)
    assert isinstance(results["report"].error, DependencyFailedError)
    assert results["report"].error.dependency == "step"
    assert results["side"].status is TaskStatus.COMPLETED


async def test_a_local_failed_dependency_fails_a_cluster_dependent_without_submitting_it(
    cluster: Cluster,
) -> None:
    async def broken() -> None:
        raise ValueError("no")

    executor = executor_for(cluster)
    executor.add_tasks(
        [
            ParallelTask("plan", broken),
            ParallelTask("s", cluster_task("echo"), ("q",), dependencies=["plan"]),
        ]
    )

    results = await executor.execute_all()

    assert isinstance(results["s"].error, DependencyFailedError)
    assert executor.job_ids == []


async def test_a_local_attempt_times_out_and_transient_errors_are_retried() -> None:
    calls = {"flaky": 0}

    async def hang() -> None:
        await asyncio.Event().wait()

    async def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("connection reset by peer")
        return "ok"

    executor = ParallelExecutor(retry_backoff_s=0.01)
    executor.add_tasks(
        [
            ParallelTask("hang", hang, timeout=0.2, max_retries=1),
            ParallelTask("flaky", flaky, max_retries=3),
        ]
    )

    results = await asyncio.wait_for(executor.execute_all(), 5)

    assert isinstance(results["hang"].error, TimeoutError)
    assert results["hang"].retry_count == 1
    assert "timed out after 0.2 s" in str(results["hang"].error)
    assert (results["flaky"].status, results["flaky"].retry_count) == (TaskStatus.COMPLETED, 2)


async def test_execute_all_sync_runs_from_plain_code_and_refuses_inside_a_loop(
    cluster: Cluster,
) -> None:
    def add(a: int, b: int) -> int:
        return a + b

    executor = executor_for(cluster)
    executor.add_tasks(
        [
            ParallelTask("sum", add, (1, 2)),
            ParallelTask("echo", cluster_task("echo"), ({"n": 1},), dependencies=["sum"]),
        ]
    )

    results = await asyncio.to_thread(executor.execute_all_sync)

    assert (results["sum"].result, results["echo"].result) == (3, {"n": 1})
    with pytest.raises(RuntimeError, match=r"await executor\.execute_all"):
        executor.execute_all_sync()


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([("a", []), ("a", [])], "task id 'a' was added twice"),
        ([("a", ["nope"])], "depends on 'nope', which is not a task"),
        ([("a", ["b"]), ("b", ["a"])], "cycle: a -> b -> a"),
    ],
)
async def test_a_bad_graph_is_refused_before_anything_runs(
    tasks: list[tuple[str, list[str]]], message: str
) -> None:
    ran: list[str] = []

    async def run() -> None:
        ran.append("x")

    executor = ParallelExecutor()
    executor.add_tasks(ParallelTask(t, run, dependencies=deps) for t, deps in tasks)

    with pytest.raises(ValueError, match=message):
        await executor.execute_all()
    assert ran == []
