"""``deerflow bench failover`` and ``deerflow bench journal``: high availability on a local etcd
(SIGKILLed leaders and agents; the journal's cost). Registered on the ``bench`` group of
:mod:`._cli`."""

from __future__ import annotations

import click

from deerflow_common import run

from ._cli import _emit, agents_option, bench, json_option, slots_option, tasks_option


@bench.command("failover")
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(0, 20),
    help="Rounds of the agent-loss and first-dispatch measurements (0 skips them).",
)
@click.option(
    "--kills",
    default=10,
    show_default=True,
    type=click.IntRange(0, 200),
    help="Leader SIGKILLs under a streaming client, on one cluster (0 skips them).",
)
@click.option(
    "--colocated-fraction",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Share of the kills that also SIGKILL the agent on the leader's node.",
)
@json_option
def bench_failover_cmd(rounds: int, kills: int, colocated_fraction: float, as_json: bool) -> None:
    """Agent SIGKILL -> its tasks running elsewhere; leader SIGKILL -> first dispatch by the
    new leader (a local etcd, 2 controllers, 2 agents); then leader SIGKILLs (some with an agent
    on the same node) -> the first result a streaming client receives from the new leader
    (2 controllers, 3 agents)."""
    from . import _failover

    _emit(run(_failover.failover(rounds, kills, colocated_fraction)), as_json)


@bench.command("journal")
@tasks_option(20000)
@agents_option
@slots_option(64)
@click.option(
    "--prefetch",
    default=64,
    show_default=True,
    type=click.IntRange(0, 4096),
    help="The controller's --prefetch (least prefetch per agent).",
)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Journal and embedded runs each, alternating.",
)
@json_option
def bench_journal_cmd(
    tasks: int, agents: int, slots: int, prefetch: int, rounds: int, as_json: bool
) -> None:
    """No-op throughput with the etcd journal (HA leader) against embedded mode, alternating."""
    from . import _failover

    _emit(run(_failover.journal(tasks, agents, slots, prefetch, rounds)), as_json)
