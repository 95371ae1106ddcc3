"""Failover as the client feels it (`deerflow bench failover --kills N`, issue #13): real etcd,
controller and agent processes on loopback; one JSON object out.

One cluster: 2 controllers and 3 agents, agent i sharing a "node" with controller i (agents 1
and 2; agent 3 stands alone). Each round submits a job of short sleep tasks and streams its
results through the SDK's ``results()``; after the first ``WARMUP_RESULTS`` the leader is
SIGKILLed, and in a share of the rounds (``colocated_fraction``) the agent on its node at the
same moment. Measured per kill: seconds from the SIGKILL to the first result the client
receives from the new leader (yielded by ``results()`` once the client no longer talks to the
dead controller: results already buffered from the dead one do not count). Such a first result
may be one that a surviving agent finished meanwhile and reported on reconnecting, so a second
client watching every event also times the new leader's first dispatch (its controller's
timestamp) and the first result of work the new leader dispatched, which is what a new leader
waiting out its reconnect grace delays. The job is streamed to its end: every accepted task must
be delivered, and once. Then the dead processes come back
(same port, same agent id, as a rebooted node would) and the next round waits for a whole
cluster: the leader serving with 3 agents connected.

Target (issue #13): at most 5 s, every kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from deerflow_common.etcd import LocalEtcd
from deerflow_controller.client import AsyncClient, Task

from ._launcher import HaCluster
from ._throughput import machine

PREFIX = "/deerflow-bench/client-failover/"
AGENTS = 3
SLOTS = 8
TASKS_PER_ROUND = 1000
TASK_S = 0.05
"""Short tasks, so that results flow steadily on both sides of every kill."""
WARMUP_RESULTS = 100
TARGET_S = 5.0


def colocated(kill: int, fraction: float) -> bool:
    """Whether kill number ``kill`` (from 0) also kills the agent on the leader's node: spread
    evenly, ``fraction`` of the kills (every other one for 0.5, starting with the second)."""
    return int((kill + 1) * fraction + 1e-9) > int(kill * fraction + 1e-9)


@dataclass
class _Kill:
    """One kill as the observing client sees it."""

    at_wall: float = 0.0
    """``time.time()`` of the SIGKILL (0 before it): events are stamped with the wall clock."""
    at_mono: float = 0.0
    first_dispatch_s: float = 0.0
    new_work_result_s: float = 0.0
    dispatched: set[str] = field(default_factory=set)


async def _observe(client: AsyncClient, job_id: str, kill: _Kill) -> None:
    """Follow every event of the job until the new leader's first dispatch and the first
    result of work it dispatched are both seen."""
    async for ev in client.events(job_id, timeout_s=120):
        if not kill.at_wall or ev.time <= kill.at_wall:
            continue  # before the kill: the old leader's log
        if ev.state == "DISPATCHED":
            kill.first_dispatch_s = kill.first_dispatch_s or ev.time - kill.at_wall
            kill.dispatched.add(ev.task_id)
        elif ev.terminal and ev.task_id in kill.dispatched:
            kill.new_work_result_s = time.monotonic() - kill.at_mono
            return


async def client_failover(etcd: LocalEtcd, kills: int, colocated_fraction: float) -> dict[str, Any]:
    """Run ``kills`` rounds on one cluster; see the module docstring. Raises RuntimeError when
    a round cannot start (no leader, agents missing) within a minute."""
    per_kill: list[dict[str, Any]] = []
    accepted = lost = duplicated = failed = 0
    async with (
        HaCluster(
            etcd.endpoint,
            prefix=PREFIX,
            controllers=2,
            agents=AGENTS,
            agent_args=["--slots", str(SLOTS)],
        ) as cluster,
        AsyncClient(cluster.addresses, timeout_s=60) as client,
        AsyncClient(cluster.addresses, timeout_s=60) as observer,
    ):
        for round_no in range(kills):
            with_agent = colocated(round_no, colocated_fraction)
            await client.agents(wait_for=AGENTS, timeout_s=60)
            leader = await cluster.leader(timeout_s=60)
            node = cluster.controllers.index(leader)
            ids = [f"r{round_no}-t{i:04d}" for i in range(TASKS_PER_ROUND)]
            job = await client.submit(
                [Task(t, "sleep", {"seconds": TASK_S}) for t in ids], name=f"failover-{round_no}"
            )
            accepted += job.accepted
            kill = _Kill()
            observing = asyncio.ensure_future(_observe(observer, job.job_id, kill))
            delivered: set[str] = set()
            failover_s = 0.0
            async for result in client.results(job.job_id, timeout_s=120):
                if result.task_id in delivered:
                    duplicated += 1
                delivered.add(result.task_id)
                failed += not result.ok
                if not kill.at_mono and len(delivered) == WARMUP_RESULTS:
                    kill.at_wall, kill.at_mono = time.time(), time.monotonic()
                    leader.signal(signal.SIGKILL)
                    if with_agent:
                        cluster.agents[node].signal(signal.SIGKILL)
                elif kill.at_mono and not failover_s and client.address != leader.address:
                    failover_s = time.monotonic() - kill.at_mono
            lost += len(set(ids) - delivered)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(observing, 30)
            if not failover_s or not kill.new_work_result_s:
                raise RuntimeError(f"kill {round_no}: no result came from a new leader")
            per_kill.append(
                {
                    "kill": round_no,
                    "agent_died_too": with_agent,
                    "failover_s": round(failover_s, 3),
                    "first_dispatch_s": round(kill.first_dispatch_s, 3),
                    "new_work_result_s": round(kill.new_work_result_s, 3),
                }
            )
            await cluster.restart_controller(leader)
            if with_agent:
                await cluster.restart_agent(cluster.agents[node])
    out: dict[str, Any] = {"workload": "client_failover", "kills": kills}
    out["colocated_fraction"] = colocated_fraction
    for measure in ("failover_s", "first_dispatch_s", "new_work_result_s"):
        out[measure] = {
            "all": _percentiles([k[measure] for k in per_kill]),
            "with_agent_death": _percentiles([k[measure] for k in per_kill if k["agent_died_too"]]),
            "without_agent_death": _percentiles(
                [k[measure] for k in per_kill if not k["agent_died_too"]]
            ),
        }
    return out | {
        "per_kill": per_kill,
        "target_max_s": TARGET_S,
        "accepted": accepted,
        "lost": lost,
        "duplicated": duplicated,
        "failed": failed,
        "controllers": 2,
        "agents": AGENTS,
        "slots": SLOTS,
        "tasks_per_round": TASKS_PER_ROUND,
        "task_s": TASK_S,
        "controller_lease_ttl_s": 3,
        "agent_lease_ttl_s": 5,
        "machine": machine(),
    }


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "max": None}
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
    }
