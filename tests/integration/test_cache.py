"""The result cache with real processes: repeated searches reach the provider simulator once,
identical searches in flight share one request, and a controller restarted with --cache-file
still answers from the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deerflow_bench import ControllerProcess
from deerflow_controller.client import AsyncClient, Task
from deerflow_controller.service.launcher import AgentProcess

from .conftest import ClusterFactory, connect, sim_stats

KEY = "cache-key"


def search_env(url: str) -> dict[str, str]:
    return {"DEERFLOW_SEARCH_BASE_URL": url, "DEERFLOW_SEARCH_API_KEY": KEY}


def search(task_id: str, query: str) -> Task:
    return Task(task_id, "search", {"query": query, "max_results": 3})


async def test_a_repeated_search_is_served_from_the_cache(
    make_cluster: ClusterFactory, make_simulator: Any
) -> None:
    sim = await make_simulator("--time-scale", "0.01", "--key", f"{KEY}=rpm:100000")
    async with make_cluster(1, agent_env=search_env(sim.url)) as cluster:
        client = await connect(cluster)
        first = await client.submit([search("q", "EV battery supply chains 2026")])
        r1 = await first.result("q", timeout_s=30)
        second = await client.submit([search("q", "EV battery supply chains 2026")])
        events = [ev async for ev in second.events(timeout_s=30)]
        stats = await client.stats()
        await client.close()
    assert r1.ok
    done = events[-1]
    assert done.state == "SUCCEEDED" and done.cache_layer == "exact", done
    assert done.output == r1.output
    assert (await sim_stats(sim.url, KEY))["served"] == 1
    assert stats.cache.hits["exact"] == 1


async def test_identical_searches_in_flight_reach_the_provider_once(
    make_cluster: ClusterFactory, make_simulator: Any
) -> None:
    sim = await make_simulator("--time-scale", "0.5", "--key", f"{KEY}=rpm:100000")
    async with make_cluster(1, agent_env=search_env(sim.url)) as cluster:
        client = await connect(cluster)
        job = await client.submit([search(f"q{i}", "delivery market share") for i in range(5)])
        results = [r async for r in job.results(timeout_s=60)]
        await client.close()
    assert sorted(r.task_id for r in results) == [f"q{i}" for i in range(5)]
    assert all(r.ok for r in results)
    assert len({r.output for r in results}) == 1
    assert sorted(r.cache_layer for r in results) == [
        "",
        "inflight",
        "inflight",
        "inflight",
        "inflight",
    ]
    assert (await sim_stats(sim.url, KEY))["served"] == 1


async def test_a_restarted_controller_keeps_its_cache_in_the_cache_file(
    make_simulator: Any, tmp_path: Path
) -> None:
    sim = await make_simulator("--time-scale", "0.01", "--key", f"{KEY}=rpm:100000")
    db = str(tmp_path / "cache.sqlite")
    outputs = []
    layers = []
    for _ in range(2):
        controller = await ControllerProcess.start(["--cache-file", db])
        agent = None
        try:
            agent = await AgentProcess.start(
                controller.address, "agent-1", ["--slots", "4"], env=search_env(sim.url)
            )
            async with AsyncClient(controller.address, timeout_s=30) as client:
                await client.agents(wait_for=1, timeout_s=30)
                job = await client.submit([search("q", "LLM inference costs")])
                result = await job.result("q", timeout_s=30)
            outputs.append(result.output)
            layers.append(result.cache_layer)
        finally:
            if agent is not None:
                await agent.stop()
            await controller.stop()  # SIGTERM: the controller saves the cache on the way out
    assert layers == ["", "exact"]
    assert outputs[0] == outputs[1]
    assert (await sim_stats(sim.url, KEY))["served"] == 1
