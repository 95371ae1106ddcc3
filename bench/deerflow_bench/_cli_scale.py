"""``deerflow bench scale``: how far one controller goes, and the partitioning past it (issue
#19, items 4 and 5; docs/SCALING.md). Registered on the ``bench`` group of :mod:`._cli`.

One JSON object with a section per measurement asked for (``--sections``):

- ``simulation``: the scheduling core in process on a fake clock (``_scale_sim.simulate``);
- ``partitioned``: G independent cores, jobs hashed across them (``_scale_sim.partitioned``),
  once per G in ``--groups``;
- ``queued``: a real controller process holding ``--queued`` tasks (``_scale_queued``);
- ``in_flight``: a real controller and agents holding ``--inflight-agents x --inflight-slots``
  long sleeps at once (``_scale_inflight``); not run by default (it starts 20 agents).
- ``light_agents``: no-op throughput with ``--light-agents`` connected agents against
  ``--light-few``, light agents (many real agent streams per process) on a real controller
  (``_scale_light``); not run by default (about a minute per round).
"""

from __future__ import annotations

from typing import Any

import click

from deerflow_common import run

from ._cli import _emit, bench, json_option
from ._throughput import machine

SECTIONS = ("simulation", "partitioned", "queued", "in_flight", "light_agents")


def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated whole numbers, got {text[:40]!r}", param_hint="--groups"
        ) from None
    if not values or any(v < 1 or v > 64 for v in values):
        raise click.BadParameter("each group count must be between 1 and 64", param_hint="--groups")
    return values


@bench.command("scale")
@click.option(
    "--sections",
    default="simulation,partitioned,queued",
    show_default=True,
    help="Comma-separated sections to run: simulation, partitioned, queued, in_flight, "
    "light_agents.",
)
@click.option(
    "--sim-agents",
    default=1_000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="simulation: simulated agents (docs/BENCHMARKS.md runs 10,000: a few minutes at "
    "1,000,000 tasks).",
)
@click.option(
    "--sim-slots",
    default=4,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="simulation and partitioned: slots of each simulated agent.",
)
@click.option(
    "--sim-tasks",
    default=200_000,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="simulation: tasks, all queued before the agents join (docs/BENCHMARKS.md runs "
    "1,000,000).",
)
@click.option(
    "--job-size",
    default=10_000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Tasks per job in the simulation and queued sections.",
)
@click.option(
    "--groups",
    default="1,2,4",
    show_default=True,
    help="partitioned: comma-separated controller group counts, one run each.",
)
@click.option(
    "--group-agents",
    default=500,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="partitioned: simulated agents of each group.",
)
@click.option(
    "--group-tasks",
    default=50_000,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="partitioned: tasks per group (the total grows with the groups).",
)
@click.option(
    "--group-job-size",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="partitioned: tasks per job (a research report is 50-150; many jobs per group keep "
    "the ring's split even).",
)
@click.option(
    "--queued",
    "queued_tasks",
    default=1_000_000,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="queued: tasks submitted through the SDK to a controller with no agent (its "
    "--max-queued-tasks and --max-queued-tasks-per-tenant are raised to this).",
)
@click.option(
    "--inflight-agents",
    default=20,
    show_default=True,
    type=click.IntRange(1, 200),
    help="in_flight: agent processes started.",
)
@click.option(
    "--inflight-slots",
    default=5_000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="in_flight: slots of each agent (every slot gets a long sleep).",
)
@click.option(
    "--inflight-hold",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="in_flight: seconds to watch the agents and the controller once every task is held.",
)
@click.option(
    "--light-agents",
    "light_many",
    default=200,
    show_default=True,
    type=click.IntRange(2, 1_000),
    help="light_agents: agents of the many-agent configuration (issue #19's 200).",
)
@click.option(
    "--light-few",
    default=2,
    show_default=True,
    type=click.IntRange(1, 100),
    help="light_agents: agents of the configuration compared against (fewer than --light-agents).",
)
@click.option(
    "--light-shape",
    default="same-agents",
    show_default=True,
    type=click.Choice(["same-agents", "same-total"]),
    help="light_agents: same-agents gives every agent of both configurations --light-slots "
    "(only how many are connected changes: 200 x 64 against 2 x 64); same-total splits the "
    "many's total slots among the few (2 x 400 against 200 x 4), which also makes each agent's "
    "messages 100 times smaller.",
)
@click.option(
    "--light-slots",
    default=None,
    type=click.IntRange(1, 1_024),
    help="light_agents: slots of each of the many agents [default: 64 with same-agents, as "
    "bench noop's agents; 4 with same-total].",
)
@click.option(
    "--light-tasks",
    default=50_000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="light_agents: echo tasks of the one job each run times, submit to last result.",
)
@click.option(
    "--light-rounds",
    default=3,
    show_default=True,
    type=click.IntRange(1, 20),
    help="light_agents: rounds, each one run of both configurations (their order alternating);"
    " the ratio is of the medians.",
)
@click.option(
    "--light-processes",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="light_agents: processes the agents of a run are split across (each holds many "
    "agent streams in one event loop).",
)
@click.option(
    "--light-idle",
    "light_idle_s",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0, 600),
    help="light_agents: seconds the controller's CPU is measured with every agent connected "
    "and idle (heartbeats only), before the job.",
)
@click.option(
    "--light-prefetch",
    default=None,
    type=click.IntRange(0, 4_096),
    help="light_agents: the controllers' --prefetch (least attempts an agent holds beyond its "
    "slots) [default: the controller's].",
)
@json_option
def bench_scale(
    sections: str, sim_agents: int, sim_slots: int, sim_tasks: int, job_size: int, groups: str,
    group_agents: int, group_tasks: int, group_job_size: int, queued_tasks: int,
    inflight_agents: int, inflight_slots: int, inflight_hold: float, light_many: int,
    light_few: int, light_shape: str, light_slots: int | None, light_tasks: int,
    light_rounds: int, light_processes: int, light_idle_s: float, light_prefetch: int | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Scale of one controller and of controller groups; in-process simulation and a real one."""
    wanted = [s.strip() for s in sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown or not wanted:
        raise click.BadParameter(
            f"sections are {', '.join(SECTIONS)}; got {sections[:60]!r}", param_hint="--sections"
        )
    group_counts = _counts(groups) if "partitioned" in wanted else []
    if "light_agents" in wanted and light_few >= light_many:
        raise click.BadParameter(
            f"must be fewer than --light-agents ({light_many}), got {light_few}",
            param_hint="--light-few",
        )
    result: dict[str, Any] = {"workload": "scale", "machine": machine()}
    if "simulation" in wanted:
        from ._scale_sim import simulate

        result["simulation"] = simulate(
            agents=sim_agents, slots=sim_slots, tasks=sim_tasks, job_size=job_size
        )
    if "partitioned" in wanted:
        from ._scale_sim import partitioned

        result["partitioned"] = [
            partitioned(
                groups=g,
                agents=group_agents,
                slots=sim_slots,
                tasks=group_tasks,
                job_size=group_job_size,
            )
            for g in group_counts
        ]
    if "queued" in wanted:
        from ._scale_queued import queued

        result["queued"] = run(queued(queued_tasks, job_size))
    if "in_flight" in wanted:
        from ._scale_inflight import in_flight

        result["in_flight"] = run(
            in_flight(inflight_agents, inflight_slots, hold_s=inflight_hold, job_size=job_size)
        )
    if "light_agents" in wanted:
        from ._scale_light import light_agents

        result["light_agents"] = run(
            light_agents(
                many=light_many,
                few=light_few,
                shape=light_shape,
                slots=light_slots,
                tasks=light_tasks,
                rounds=light_rounds,
                processes=light_processes,
                idle_s=light_idle_s,
                prefetch=light_prefetch,
            )
        )
    _emit(result, as_json)
