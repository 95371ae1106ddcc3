"""Agents dying, draining and tasks being cancelled, with real processes and real signals."""

from __future__ import annotations

import asyncio
import signal
import time

from deerflow_controller.client import Task

from .conftest import ClusterFactory, connect


async def test_an_agent_killed_mid_task_has_its_tasks_run_again_on_the_other_agent(
    make_cluster: ClusterFactory,
) -> None:
    tasks = [Task(f"t{i}", "sleep", {"seconds": 0.4}) for i in range(24)]
    async with make_cluster(2, slots=4) as cluster:
        victim = cluster.agents[0]
        client = await connect(cluster)
        job = await client.submit(tasks)
        terminal = []
        killed = False
        running_on_victim: set[str] = set()
        async for ev in job.events(timeout_s=60):
            if not killed and ev.state == "RUNNING" and ev.agent_id == victim.name:
                running_on_victim.add(ev.task_id)
                victim.signal(signal.SIGKILL)
                killed = True
            if ev.terminal:
                terminal.append(ev)
        await victim.wait(10)
        await client.close()
    assert killed
    assert sorted(ev.task_id for ev in terminal) == sorted(t.id for t in tasks)  # each once
    assert all(ev.state == "SUCCEEDED" for ev in terminal)
    rerun = [ev for ev in terminal if ev.task_id in running_on_victim]
    assert rerun and all(ev.agent_id == "agent-2" and ev.attempt >= 2 for ev in rerun)


async def test_sigterm_drains_an_agent_without_losing_or_repeating_work(
    make_cluster: ClusterFactory,
) -> None:
    tasks = [Task(f"t{i}", "sleep", {"seconds": 0.3}) for i in range(40)]
    async with make_cluster(2, slots=4) as cluster:
        leaving = cluster.agents[0]
        client = await connect(cluster)
        job = await client.submit(tasks)
        terminal = []
        signalled = False
        async for ev in job.events(timeout_s=60):
            if not signalled and ev.state == "RUNNING" and ev.agent_id == leaving.name:
                leaving.signal(signal.SIGTERM)
                signalled = True
            if ev.terminal:
                terminal.append(ev)
        exit_code = await leaving.wait(30)
        stats = await client.stats()
        await client.close()
    assert signalled and exit_code == 0
    assert sorted(ev.task_id for ev in terminal) == sorted(t.id for t in tasks)
    assert all(ev.state == "SUCCEEDED" for ev in terminal)
    assert stats.retries == 0  # running work finished where it was; queued work moved uncounted
    assert any(ev.agent_id == leaving.name for ev in terminal)


async def test_cancel_stops_a_running_sleep_task_and_frees_its_slot(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(1, slots=1, prefetch=0) as cluster:
        client = await connect(cluster)
        long_job = await client.submit([Task("long", "sleep", {"seconds": 3600}, timeout_s=7200)])
        async for ev in long_job.events(timeout_s=30):
            if ev.state == "RUNNING":
                break
        assert await long_job.cancel(reason="test") == 1
        cancelled = await long_job.result("long", timeout_s=10)
        # The only slot is free again only once the agent has stopped the sleep and said so.
        follow_up = await client.submit([Task("next", "echo", b"after")])
        after = await follow_up.result("next", timeout_s=30)
        await client.close()
    assert cancelled.state == "CANCELLED" and "test" in cancelled.error
    assert after.ok and after.output == b"after"


async def test_a_hung_agent_is_declared_dead_at_the_silence_timeout_after_its_last_message(
    make_cluster: ClusterFactory,
) -> None:
    silence = 2.0
    async with make_cluster(
        1, controller_args=("--agent-silence-timeout", str(silence))
    ) as cluster:
        hung = cluster.agents[0]
        client = await connect(cluster)
        try:
            (info,) = await client.agents()
            last_heard = info.last_heartbeat
            hung.signal(signal.SIGSTOP)  # its socket stays open; it sends nothing more
            stopped_at = time.time()
            async with asyncio.timeout(silence * 4):
                # The controller offers no watch of agent streams: poll its list (20 ms).
                while True:
                    listed = {a.agent_id: a for a in await client.agents()}
                    if hung.name not in listed:
                        break
                    last_heard = listed[hung.name].last_heartbeat
                    await asyncio.sleep(0.02)
            declared_dead_at = time.time()
        finally:
            hung.signal(signal.SIGCONT)  # by its pid; the fixture then stops it
            await client.close()
    # Dead at the limit after its last message (a heartbeat, one a second), never before it,
    # and not half a limit later as with a check every half limit. The exact instant is the
    # fake-clock test's (test_scheduler_lifecycle.py: declared dead at the limit after its
    # last message); here, on a loaded 2-core VM, the timer's wake-up and this poll get a
    # quarter of a limit of slack instead of a tight bound that load could break.
    assert silence - 0.1 <= declared_dead_at - last_heard <= silence * 1.25
    assert declared_dead_at - stopped_at <= silence * 1.25
