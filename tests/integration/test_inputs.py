"""Results flow along dependencies (issue #15) with real controller and agent processes: a
dependent reads its dependencies' outputs (named or all, in depends_on order), a 10 MB output
reaches its dependent by reference, a split task's parts read their parent's inputs and its
dependents its merged output, a retried dependent reads them again, and the bounds and bad
inputs answer with one sentence each."""

from __future__ import annotations

import hashlib
import json

import pytest

from deerflow_agent import HandlerEnvironment
from deerflow_bench.handlers import blob
from deerflow_controller.client import InvalidJobError, Task

from .conftest import ClusterFactory, connect

HANDLERS = ("blob", "read_inputs", "read_inputs_items")
AGENT_ARGS = tuple(a for h in HANDLERS for a in ("--handler", f"deerflow_bench.handlers:{h}"))


def pattern(seed: str, size: int) -> bytes:
    """What ``blob`` returns for ``{"bytes": size, "seed": seed}``."""
    unit = f"{seed}|".encode()
    return (unit * (size // len(unit) + 1))[:size]


async def test_pattern_is_what_the_blob_handler_returns() -> None:
    out = await HandlerEnvironment(task_id="t").run(blob, b'{"bytes": 1000, "seed": "Q"}')
    assert out == pattern("Q", 1000)


async def test_a_dependent_reads_named_or_all_inputs_in_depends_on_order(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(2, slots=4, agent_args=AGENT_ARGS) as cluster:
        client = await connect(cluster)
        job = await client.submit(
            [
                Task("x", "blob", {"bytes": 100, "seed": "X"}),
                Task("y", "blob", {"bytes": 200, "seed": "Y"}),
                Task("all", "read_inputs", depends_on=["y", "x"], inputs="all"),
                Task("named", "read_inputs", depends_on=["x", "y"], inputs=["y", "x"]),
                Task("one", "read_inputs", depends_on=["x", "y"], inputs=["y"]),
                Task("none", "read_inputs", depends_on=["x"]),
            ]
        )
        results = await job.wait(timeout_s=60)
        await client.close()
    assert all(r.ok for r in results.values()), results
    every = results["all"].json()
    assert every["order"] == ["y", "x"]
    assert every["sizes"] == {"y": 200, "x": 100}
    assert every["sha256"]["x"] == hashlib.sha256(pattern("X", 100)).hexdigest()
    assert results["named"].json()["order"] == ["x", "y"]  # depends_on order, not inputs'
    assert results["one"].json()["order"] == ["y"]
    assert results["none"].json()["order"] == []


async def test_a_10_mb_output_reaches_its_dependent_by_reference(
    make_cluster: ClusterFactory,
) -> None:
    size = 10_000_000
    async with make_cluster(2, slots=2, agent_args=AGENT_ARGS) as cluster:
        client = await connect(cluster)
        job = await client.submit(
            [
                Task("big", "blob", {"bytes": size, "seed": "ten"}),
                Task("small", "blob", {"bytes": 10, "seed": "s"}),
                Task("reader", "read_inputs", depends_on=["big", "small"], inputs="all"),
            ]
        )
        results = await job.wait(timeout_s=120)
        await client.close()
    report = results["reader"].json()
    assert report["sizes"] == {"big": size, "small": 10}
    assert report["sha256"]["big"] == hashlib.sha256(pattern("ten", size)).hexdigest()
    assert report["heads"]["big"] == pattern("ten", 32).decode()


async def test_a_split_task_reads_its_inputs_in_every_part_and_hands_on_its_merge(
    make_cluster: ClusterFactory,
) -> None:
    items = [f"item-{i}" for i in range(32)]
    async with make_cluster(2, slots=4, agent_args=AGENT_ARGS) as cluster:
        client = await connect(cluster)
        job = await client.submit(
            [
                Task("notes", "blob", {"bytes": 50, "seed": "N"}),
                Task(
                    "steps",
                    "read_inputs_items",
                    {"items": items, "per_item_s": 0.005},
                    depends_on=["notes"],
                    inputs=["notes"],
                ),
                Task("report", "read_inputs", depends_on=["steps"], inputs="all"),
            ]
        )
        events = [ev async for ev in job.events(timeout_s=60)]
        results = await job.wait(timeout_s=60)
        await client.close()
    running = [ev for ev in events if ev.task_id == "steps" and ev.state == "RUNNING"]
    assert running and running[0].detail.startswith("split 32 items")
    merged = results["steps"].json()["results"]
    assert [r["item"] for r in merged] == items
    assert all(r["inputs"]["order"] == ["notes"] for r in merged)
    assert {r["inputs"]["sizes"]["notes"] for r in merged} == {50}
    steps_output = results["steps"].output
    report = results["report"].json()
    assert report["sizes"] == {"steps": len(steps_output)}
    assert report["sha256"]["steps"] == hashlib.sha256(steps_output).hexdigest()


async def test_a_retried_dependent_reads_its_inputs_again(make_cluster: ClusterFactory) -> None:
    async with make_cluster(1, slots=2, agent_args=AGENT_ARGS) as cluster:
        client = await connect(cluster)
        job = await client.submit(
            [
                Task("p", "blob", {"bytes": 300_000, "seed": "P"}),  # by reference
                Task("c", "read_inputs", {"fail_attempts": 1}, depends_on=["p"], inputs="all"),
            ]
        )
        results = await job.wait(timeout_s=60)
        await client.close()
    report = results["c"].json()
    assert report["attempt"] == 2
    assert report["sha256"]["p"] == hashlib.sha256(pattern("P", 300_000)).hexdigest()


async def test_outputs_over_the_bounds_fail_resource_exhausted_naming_the_setting(
    make_cluster: ClusterFactory,
) -> None:
    args = ("--max-retained-output-bytes", "1000", "--max-retained-job-bytes", "1500")
    async with make_cluster(1, slots=4, agent_args=AGENT_ARGS, controller_args=args) as cluster:
        client = await connect(cluster)
        huge = await client.submit(
            [
                Task("huge", "blob", {"bytes": 2000}),
                Task("reader", "read_inputs", depends_on=["huge"], inputs="all"),
                Task("unread", "blob", {"bytes": 2000}),  # nobody reads it: no bound
            ]
        )
        first = await huge.wait(timeout_s=60)
        pair = await client.submit(
            [
                Task("p1", "blob", {"bytes": 800}),
                Task("p2", "blob", {"bytes": 800}),
                Task("both", "read_inputs", depends_on=["p1", "p2"], inputs="all"),
            ]
        )
        second = await pair.wait(timeout_s=60)
        await client.close()
    assert first["huge"].error_kind == "RESOURCE_EXHAUSTED"
    assert first["huge"].error.startswith("task 'huge' produced 2000 bytes")
    assert "--max-retained-output-bytes" in first["huge"].error
    assert first["reader"].error_kind == "DEPENDENCY_FAILED"
    assert first["unread"].ok
    over = [r for r in (second["p1"], second["p2"]) if not r.ok]
    assert len(over) == 1 and over[0].error_kind == "RESOURCE_EXHAUSTED"
    assert "--max-retained-job-bytes" in over[0].error and "\n" not in over[0].error
    assert second["both"].error_kind == "DEPENDENCY_FAILED"


async def test_bad_inputs_are_refused_in_one_sentence(make_cluster: ClusterFactory) -> None:
    async with make_cluster(1, slots=2, agent_args=AGENT_ARGS) as cluster:
        client = await connect(cluster)
        with pytest.raises(InvalidJobError) as refused:
            await client.submit(
                [Task("a", "blob"), Task("b", "read_inputs", depends_on=["a"], inputs=["c"])]
            )
        with pytest.raises(ValueError, match=r"task 'b': inputs must be 'all' or a list"):
            await client.submit([Task("a", "blob"), Task("b", "read_inputs", inputs="a")])
        job = await client.submit(
            [Task("a", "blob", {"bytes": 5}), Task("h", "cpu", depends_on=["a"], inputs="all")]
        )
        cpu = (await job.wait(timeout_s=60))["h"]
        await client.close()
    assert refused.value.message == (
        "task 'b' asks for the output of 'c', which is not in its depends_on; add it there or "
        "remove it from inputs"
    )
    assert cpu.error_kind == "FATAL" and "is a cpu handler" in cpu.error
    assert json.dumps(cpu.error).count("\\n") == 0


async def test_a_cache_hit_and_an_identical_task_in_flight_hand_their_outputs_on(
    make_cluster: ClusterFactory,
) -> None:
    async with make_cluster(2, slots=4, agent_args=AGENT_ARGS) as cluster:
        client = await connect(cluster)
        leader_job = await client.submit([Task("s", "sleep", {"seconds": 1.0}, cache="on")])
        # Submitted while the identical sleep runs: it waits for it and shares its result.
        follower_job = await client.submit(
            [
                Task("s", "sleep", {"seconds": 1.0}, cache="on"),
                Task("r", "read_inputs", depends_on=["s"], inputs="all"),
            ]
        )
        followed = await follower_job.wait(timeout_s=60)
        await leader_job.wait(timeout_s=60)
        # Now the cache answers it outright.
        hit_job = await client.submit(
            [
                Task("s", "sleep", {"seconds": 1.0}, cache="on"),
                Task("r", "read_inputs", depends_on=["s"], inputs="all"),
            ]
        )
        hit = await hit_job.wait(timeout_s=60)
        await client.close()
    expected = json.dumps({"slept": 1.0})
    assert followed["s"].cache_layer == "inflight"
    assert followed["r"].json()["heads"] == {"s": expected}
    assert hit["s"].cache_layer == "exact"
    assert hit["r"].json()["heads"] == {"s": expected}
