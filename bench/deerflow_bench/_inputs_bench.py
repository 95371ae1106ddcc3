"""``deerflow bench inputs``: what it costs to hand a dependency's output to its dependent
(issue #15), per MB, through the public SDK on a real controller and agents.

Each round is a job of two tasks: ``p`` produces an output of the size under test (the ``blob``
handler), ``c`` depends on it and reads nothing but the sizes of its inputs. Both measures are
differences of event times stamped by the controller's clock:

- the *span*, from ``p``'s DISPATCHED to ``c``'s SUCCEEDED: ``p``'s run and its result's trip
  to the controller (where an output that dependents will fetch is hashed), dispatching ``c``,
  carrying the output to its agent (inline in the assignment up to ``--inline-input-bytes``,
  else fetched in 1 MiB chunks over ``FetchInput`` and checked), starting the handler, and its
  result coming back (DISPATCHED, since a RUNNING event may not come: an attempt that ends
  within the agent's report turn is reported by its result alone);
- the *hand-off*, its part after ``p``'s SUCCEEDED.

The same job without ``inputs`` is the baseline, interleaved round by round; the difference of
the medians, divided by the output's size, is the cost per MB of the inputs themselves.
"""

from __future__ import annotations

import statistics
from typing import Any

from deerflow_controller.client import AsyncClient, Task

from ._launcher import Cluster
from ._throughput import RssSampler, machine

HANDLERS = ("blob", "read_inputs")
MB = 1_000_000


async def _timings(
    client: AsyncClient, size: int, seed: str, *, inputs: bool
) -> tuple[float, float]:
    """(span, hand-off) of one round, in seconds (see the module docstring)."""
    job = await client.submit(
        [
            Task("p", "blob", {"bytes": size, "seed": seed}),
            Task(
                "c",
                "read_inputs",
                {"digest": False},
                depends_on=["p"],
                inputs="all" if inputs else (),
            ),
        ],
        name="bench-inputs",
    )
    done: dict[str, float] = {}
    started = 0.0
    async for ev in job.events(timeout_s=120):
        if ev.task_id == "p" and ev.state == "DISPATCHED":
            started = ev.time
        if ev.terminal:
            if ev.state != "SUCCEEDED":
                raise RuntimeError(f"task {ev.task_id} ended {ev.state}: {ev.error}")
            done[ev.task_id] = ev.time
    return done["c"] - (started or done["p"]), done["c"] - done["p"]


async def inputs_bench(sizes_mb: list[float], rounds: int, agents: int) -> dict[str, Any]:
    """Median span and hand-off with and without inputs per output size (see the module
    docstring)."""
    handler_args = [a for h in HANDLERS for a in ("--handler", f"deerflow_bench.handlers:{h}")]
    results: list[dict[str, Any]] = []
    async with Cluster(agents, agent_args=["--slots", "4", *handler_args]) as cluster:
        assert cluster.controller is not None
        rss = RssSampler(cluster.controller.pid)
        rss.start()
        async with AsyncClient(cluster.address, timeout_s=120) as client:
            await client.agents(wait_for=agents, timeout_s=30)
            await _timings(client, 1000, "warm-up", inputs=True)
            for mb in sizes_mb:
                size = int(mb * MB)
                with_inputs, baseline = [], []
                for r in range(rounds):
                    # Interleaved, so drift in the machine's load hits both alike.
                    with_inputs.append(await _timings(client, size, f"{mb}-{r}", inputs=True))
                    baseline.append(await _timings(client, size, f"{mb}-{r}", inputs=False))
                span = statistics.median(t[0] for t in with_inputs)
                base = statistics.median(t[0] for t in baseline)
                handoff = statistics.median(t[1] for t in with_inputs)
                base_handoff = statistics.median(t[1] for t in baseline)
                results.append(
                    {
                        "output_mb": mb,
                        "by_reference": size > 256 * 1024,
                        "span_ms": round(span * 1000, 2),
                        "baseline_span_ms": round(base * 1000, 2),
                        "handoff_ms": round(handoff * 1000, 2),
                        "baseline_handoff_ms": round(base_handoff * 1000, 2),
                        "inputs_cost_ms": round((span - base) * 1000, 2),
                        "inputs_cost_ms_per_mb": round((span - base) * 1000 / mb, 2),
                        "handoff_cost_ms_per_mb": round((handoff - base_handoff) * 1000 / mb, 2),
                    }
                )
        controller_rss_mb = await rss.stop()
    largest = results[-1] if results else {}
    return {
        "workload": "inputs",
        "rounds": rounds,
        "agents": agents,
        "sizes": results,
        "cost_ms_per_mb": largest.get("inputs_cost_ms_per_mb"),
        "controller_rss_mb": round(controller_rss_mb, 1),
        "machine": machine(),
    }
