"""The tuner on a real controller and agent: its changes reach the admin API and
``deerflow stats``."""

from __future__ import annotations

import asyncio
import json
import sys

from deerflow_controller.client import AsyncClient, Task

from .conftest import ClusterFactory, connect


async def _kept_change(client: AsyncClient, deadline_s: float) -> list[dict[str, object]]:
    """Read the tuner's history from the admin API until it holds a kept change."""
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline_s
    while True:
        stats = await client.stats()
        history = [
            {"knob": c.knob, "old": c.old_value, "new": c.new_value, "outcome": c.outcome}
            for c in stats.tuning.history
        ]
        if any(c["outcome"] == "kept" for c in history) or loop.time() > until:
            return history
        await asyncio.sleep(0.2)  # polling the API for a condition, with a deadline


async def test_the_tuner_raises_a_limited_agents_slots_and_reports_it(
    make_cluster: ClusterFactory,
) -> None:
    tuner = ("--tuner", "on", "--tuner-interval-s", "0.3", "--agent-slot-limit", "1")
    async with make_cluster(1, slots=16, controller_args=tuner) as cluster:
        client = await connect(cluster)
        try:
            stats = await client.stats()
            assert stats.tuning.mode == "on" and stats.tuning.objective == "throughput"
            knobs = {k.name: (k.value, k.floor, k.ceiling) for k in stats.tuning.knobs}
            assert knobs["agent_slots"] == (1, 1, 16)
            work = [Task(f"t{i}", "sleep", {"seconds": 0.02}) for i in range(3000)]
            job = await client.submit(work)
            history = await _kept_change(client, 30.0)
            assert {"knob": "agent_slots", "old": 1, "new": 2, "outcome": "kept"} in history
            await job.cancel()

            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "deerflow_controller.cli",
                "stats", "--json", "--controller", cluster.address,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await proc.communicate()
            assert proc.returncode == 0
            tuner_out = json.loads(out)["tuner"]
            assert tuner_out["mode"] == "on"
            first = tuner_out["history"][0]
            assert (first["knob"], first["old"], first["new"]) == ("agent_slots", 1, 2)
            assert first["outcome"] == "kept" and first["after"] > first["before"]
        finally:
            await client.close()
