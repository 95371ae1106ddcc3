"""Jobs end to end on real controller and agent processes."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from deerflow_controller.client import Client, Task, TaskEvent

from .conftest import ClusterFactory, connect


async def test_a_thousand_tasks_over_two_agents_all_return_correct_results(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(2, slots=16) as cluster:
        client = await connect(cluster)
        job = await client.submit([Task(f"t{i}", "echo", f"payload-{i}") for i in range(1000)])
        results = await job.wait(timeout_s=60)
        await client.close()
    assert len(results) == 1000
    assert all(r.ok for r in results.values())
    assert all(results[f"t{i}"].output == f"payload-{i}".encode() for i in range(1000))
    assert {r.agent_id for r in results.values()} == {"agent-1", "agent-2"}


async def test_priority_order_is_honoured_when_slots_are_scarce(
    make_cluster: ClusterFactory,
) -> None:
    rng = random.Random(3)
    priorities = [rng.randint(-5, 5) for _ in range(40)]
    async with make_cluster(1, slots=1, prefetch=0) as cluster:
        client = await connect(cluster)
        job = await client.submit(
            [Task(f"t{i}", "echo", b"", priority=p) for i, p in enumerate(priorities)]
        )
        order = [r.task_id async for r in job.results(timeout_s=60)]
        await client.close()
    expected = sorted(range(40), key=lambda i: (-priorities[i], i))
    assert order == [f"t{i}" for i in expected]


async def test_a_later_high_priority_job_overtakes_queued_low_priority_work(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(1, slots=1, prefetch=0) as cluster:
        client = await connect(cluster)
        low = await client.submit(
            [Task(f"low{i}", "sleep", {"seconds": 0.02}, priority=0) for i in range(30)]
        )
        # Once the first low task has run, the queue is known to hold the rest.
        await client.result(low.job_id, "low0", timeout_s=30)
        high = await client.submit(
            [Task(f"high{i}", "sleep", {"seconds": 0.02}, priority=10) for i in range(5)]
        )
        high_events = [ev async for ev in client.events(high.job_id)]
        low_events = [ev async for ev in client.events(low.job_id)]
        await client.close()
    # Controller timestamps, one clock: from the moment the high tasks were queued, no low task
    # was dispatched until every high task had been.
    high_queued = min(ev.time for ev in high_events if ev.state == "QUEUED")
    last_high_dispatch = max(ev.time for ev in high_events if ev.state == "DISPATCHED")
    low_dispatches_after = [
        ev.time for ev in low_events if ev.state == "DISPATCHED" and ev.time >= high_queued
    ]
    assert low_dispatches_after, "the low job should still have had queued work"
    assert min(low_dispatches_after) >= last_high_dispatch
    assert sum(ev.state == "SUCCEEDED" for ev in low_events) == 30


async def test_dependencies_are_released_only_after_they_succeed(
    make_cluster: ClusterFactory,
) -> None:
    tasks = [
        Task("a", "sleep", {"seconds": 0.05}),
        Task("b", "echo", "b", depends_on=["a"]),
        Task("c", "sleep", {"seconds": 0.05}, depends_on=["a"]),
        Task("d", "echo", "d", depends_on=["b", "c"]),
        Task("e", "echo", "e", depends_on=["d"]),
    ]
    async with make_cluster(2) as cluster:
        client = await connect(cluster)
        job = await client.submit(tasks)
        events = [ev async for ev in job.events(timeout_s=60)]
        await client.close()
    seq: dict[tuple[str, str], int] = {(ev.task_id, ev.state): ev.seq for ev in events}
    for t in tasks:
        assert (t.id, "SUCCEEDED") in seq
        for dep in t.depends_on:
            assert seq[(dep, "SUCCEEDED")] < seq[(t.id, "DISPATCHED")], (t.id, dep)
    assert next(ev.state for ev in events if ev.task_id == "d") == "PENDING"


async def test_a_failed_dependency_fails_its_dependents_at_once_with_a_reason(
    make_cluster: ClusterFactory,
) -> None:
    tasks = [
        Task("bad", "sleep", "this is not JSON", max_retries=0),
        Task("child", "echo", "x", depends_on=["bad"]),
        Task("grandchild", "echo", "y", depends_on=["child"]),
        Task("unrelated", "echo", "z"),
    ]
    async with make_cluster(2) as cluster:
        client = await connect(cluster)
        job = await client.submit(tasks)
        results = await job.wait(timeout_s=30)
        await client.close()
    assert results["bad"].state == "FAILED"
    assert results["bad"].error_kind == "FATAL"
    assert results["child"].state == "FAILED"
    assert results["child"].error_kind == "DEPENDENCY_FAILED"
    assert "'bad'" in results["child"].error
    assert "'child'" in results["grandchild"].error
    assert results["unrelated"].ok


async def test_a_task_naming_an_unknown_handler_fails_and_lists_the_known_ones(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(2) as cluster:
        client = await connect(cluster)
        job = await client.submit(
            [Task("ghost", "no_such_handler", b"")]
            + [Task(f"ok{i}", "echo", b"x") for i in range(20)]
        )
        results = await job.wait(timeout_s=30)
        await client.close()
    ghost = results["ghost"]
    assert ghost.state == "FAILED" and ghost.error_kind == "UNKNOWN_HANDLER"
    assert "'no_such_handler'" in ghost.error
    assert "echo" in ghost.error and "sleep" in ghost.error
    assert all(results[f"ok{i}"].ok for i in range(20))


async def test_resubmitting_the_same_job_id_is_idempotent(make_cluster: ClusterFactory) -> None:
    tasks = [Task(f"t{i}", "echo", str(i)) for i in range(10)]
    async with make_cluster(1) as cluster:
        client = await connect(cluster)
        first = await client.submit(tasks, job_id="job-42")
        second = await client.submit(tasks, job_id="job-42")
        results = await first.wait(timeout_s=30)
        events = [ev async for ev in client.events("job-42", terminal_only=True)]
        await client.close()
    assert second.job_id == first.job_id == "job-42"
    assert len(results) == 10
    assert sorted(ev.task_id for ev in events) == sorted(t.id for t in tasks)


async def test_a_watcher_resuming_after_a_seq_sees_each_later_event_once(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(1) as cluster:
        client = await connect(cluster)
        job = await client.submit([Task(f"t{i}", "echo", b"") for i in range(50)])
        everything: list[TaskEvent] = [ev async for ev in job.events(timeout_s=30)]
        middle = everything[len(everything) // 2].seq
        rest = [ev async for ev in client.events(job.job_id, after_seq=middle)]
        await client.close()
    assert [ev.seq for ev in rest] == [ev.seq for ev in everything if ev.seq > middle]


async def test_the_blocking_client_submits_and_iterates_results(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(1) as cluster:
        address = cluster.address

        def blocking() -> dict[str, object]:
            with Client(address) as client:
                client.agents(wait_for=1, timeout_s=30)
                job = client.submit(
                    [
                        Task("a", "sleep", {"seconds": 0.01}),
                        Task("b", "echo", "hi", depends_on=["a"]),
                    ]
                )
                out = {r.task_id: r.json() if r.task_id == "a" else r.output for r in job.results()}
                out["status"] = client.get_job(job.job_id).done
                return out

        out = await asyncio.to_thread(blocking)
    assert out == {"a": {"slept": 0.01}, "b": b"hi", "status": True}


@pytest.mark.usefixtures("plugin_path")
async def test_a_handler_installed_with_the_handler_flag_runs(make_cluster: ClusterFactory) -> None:
    async with make_cluster(1, agent_args=("--handler", "deerflow_test_plugins:shout")) as cluster:
        client = await connect(cluster)
        agents = await client.agents()
        job = await client.submit([Task("s", "shout", "quiet please")])
        result = await job.result("s", timeout_s=30)
        await client.close()
    assert "shout" in agents[0].handlers
    assert result.output == b"QUIET PLEASE"


async def test_cpu_tasks_run_in_the_agents_process_pool(make_cluster: ClusterFactory) -> None:
    async with make_cluster(1) as cluster:
        client = await connect(cluster)
        job = await client.submit(
            [Task(f"c{i}", "cpu", {"rounds": 1000, "data": "x"}) for i in range(4)]
        )
        results = await job.wait(timeout_s=60)
        await client.close()
    digests = {json.dumps(r.json()) for r in results.values()}
    assert len(digests) == 1 and all(r.ok for r in results.values())
