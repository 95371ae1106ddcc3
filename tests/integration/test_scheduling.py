"""Scheduling intelligence with real processes: a task split into parts and merged, Temporal's
timeouts reaching the client with the right state and reason, handler traits announced by real
agents. Nothing here depends on timing beyond durations that differ by an order of magnitude."""

from __future__ import annotations

import json
import math

import pytest

from deerflow_controller.client import InvalidJobError, Task

from .conftest import ClusterFactory, connect


async def test_a_work_task_with_many_items_is_split_and_merged_in_order(
    make_cluster: ClusterFactory,
) -> None:
    items = [f"item-{i}" for i in range(64)]
    async with make_cluster(2, slots=4) as cluster:
        client = await connect(cluster)
        job = await client.submit(
            [Task("big", "work", {"items": items, "per_item_s": 0.005}, partial_results=False)]
        )
        events = [ev async for ev in job.events(timeout_s=60)]
        stats = await client.stats()
        await client.close()
    assert {ev.task_id for ev in events} == {"big"}  # parts stay inside the controller
    running = [ev for ev in events if ev.state == "RUNNING"]
    assert running and running[0].detail.startswith("split 64 items")
    done = events[-1]
    assert done.state == "SUCCEEDED", done
    assert json.loads(done.output)["results"] == items
    assert stats.split_tasks == 1


async def test_a_payload_the_splitter_cannot_read_fails_only_that_task(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(1, slots=2) as cluster:
        client = await connect(cluster)
        job = await client.submit(
            [
                Task("bad", "work", b"[not json"),
                Task("fine", "work", {"items": [1], "per_item_s": 0.001}),
            ]
        )
        results = {r.task_id: r async for r in job.results(timeout_s=60)}
        await client.close()
    assert results["bad"].state == "FAILED" and results["bad"].error_kind == "SPLIT_ERROR"
    assert "'work'" in results["bad"].error and "splitter" in results["bad"].error
    assert results["fine"].ok


async def test_a_long_task_that_reports_no_progress_hits_its_heartbeat_timeout(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(1, slots=2) as cluster:
        client = await connect(cluster)
        job = await client.submit(
            [Task("quiet", "sleep", {"seconds": 30}, heartbeat_timeout_s=0.3, max_retries=0)]
        )
        result = await job.result("quiet", timeout_s=60)
        await client.close()
    assert result.state == "TIMED_OUT"
    assert result.error_kind == "HEARTBEAT_TIMEOUT"
    assert "ctx.progress()" in result.error


async def test_work_that_reports_progress_outlives_a_short_heartbeat_timeout(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(1, slots=2) as cluster:
        client = await connect(cluster)
        # 20 items of 0.1 s: 2 s in all, progress after each item, heartbeat timeout 1 s.
        job = await client.submit(
            [
                Task(
                    "chatty",
                    "work",
                    {"items": list(range(20)), "per_item_s": 0.1},
                    heartbeat_timeout_s=1.0,
                    split=False,
                )
            ]
        )
        events = [ev async for ev in job.events(timeout_s=60)]
        await client.close()
    assert events[-1].state == "SUCCEEDED", events[-1]
    # What the handler said reaches the watcher: at most one PROGRESS a second, in order.
    progress = [(ev.progress, ev.detail) for ev in events if ev.state == "PROGRESS"]
    assert 1 <= len(progress) <= 3, progress
    assert progress[0] == (0.05, "1/20 items")
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and all(0 < f <= 1 for f in fractions)


async def test_schedule_to_start_expires_while_the_only_slot_is_busy(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(1, slots=1, prefetch=0) as cluster:
        client = await connect(cluster)
        job = await client.submit(
            [
                Task("hog", "sleep", {"seconds": 30}, priority=10),
                Task("waits", "echo", b"x", schedule_to_start_s=0.2),
            ]
        )
        result = await job.result("waits", timeout_s=60)
        await job.cancel(reason="done")
        await client.close()
    assert result.state == "TIMED_OUT" and result.error_kind == "SCHEDULE_TIMEOUT"
    assert "schedule-to-start" in result.error


async def test_a_job_past_its_deadline_ends_its_unfinished_tasks_for_its_watcher(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(1, slots=1, prefetch=0) as cluster:
        client = await connect(cluster)
        job = await client.submit(
            [
                Task("quick", "echo", b"x", priority=10),
                Task("slow", "sleep", {"seconds": 30}, priority=5),
                Task("after", "echo", b"y", depends_on=["slow"]),
                Task("capped", "sleep", {"seconds": 30}, schedule_to_close_s=60),
            ],
            deadline_s=1.0,
        )
        results = {r.task_id: r async for r in job.results(timeout_s=60)}
        await client.close()
    assert results["quick"].ok
    for task_id in ("slow", "after", "capped"):
        assert results[task_id].state == "TIMED_OUT", results[task_id]
        assert results[task_id].error_kind == "JOB_DEADLINE_EXCEEDED"
        assert "deadline of 1 s" in results[task_id].error


async def test_a_schedule_to_close_that_is_not_finite_is_refused_with_a_sentence(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(1, slots=1) as cluster:
        client = await connect(cluster)
        with pytest.raises(InvalidJobError) as caught:
            await client.submit([Task("a", "echo", b"x", schedule_to_close_s=math.inf)])
        await client.close()
    assert str(caught.value).endswith(
        "task 'a' has schedule_to_close_s inf; use a number of seconds from 0 (no limit) to 604800"
    )
