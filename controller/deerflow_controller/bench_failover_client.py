"""Failover as the client feels it (`deerflow bench failover --kills N`, issue #13): real etcd,
controller and agent processes on loopback; one JSON object out.

One cluster: 2 controllers and 3 agents, agent i sharing a "node" with controller i (agents 1
and 2; agent 3 stands alone). Each round submits a job of short sleep tasks and streams its
results through the SDK's ``results()``; after the first ``WARMUP_RESULTS`` the leader is
SIGKILLed, and in a share of the rounds (``colocated_fraction``) the agent on its node at the
same moment. Measured per kill: seconds from the SIGKILL to the first result the client
receives from the new leader (yielded by ``results()`` once the client no longer talks to the
dead controller: results already buffered from the dead one do not count). The job is streamed
to its end: every accepted task must be delivered, and once. Then the dead processes come back
(same port, same agent id, as a rebooted node would) and the next round waits for a whole
cluster: the leader serving with 3 agents connected.

Target (issue #13): at most 5 s, every kill.
"""

from __future__ import annotations

import signal
import statistics
import time
from typing import Any

from deerflow_common.etcd import LocalEtcd

from .bench import machine
from .client import AsyncClient, Task
from .launcher import HaCluster

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
    ):
        for kill in range(kills):
            with_agent = colocated(kill, colocated_fraction)
            await client.agents(wait_for=AGENTS, timeout_s=60)
            leader = await cluster.leader(timeout_s=60)
            node = cluster.controllers.index(leader)
            ids = [f"r{kill}-t{i:04d}" for i in range(TASKS_PER_ROUND)]
            job = await client.submit(
                [Task(t, "sleep", {"seconds": TASK_S}) for t in ids], name=f"failover-{kill}"
            )
            accepted += job.accepted
            delivered: set[str] = set()
            killed_at = failover_s = 0.0
            async for result in client.results(job.job_id, timeout_s=120):
                if result.task_id in delivered:
                    duplicated += 1
                delivered.add(result.task_id)
                failed += not result.ok
                if not killed_at and len(delivered) == WARMUP_RESULTS:
                    killed_at = time.monotonic()
                    leader.signal(signal.SIGKILL)
                    if with_agent:
                        cluster.agents[node].signal(signal.SIGKILL)
                elif killed_at and not failover_s and client.address != leader.address:
                    failover_s = time.monotonic() - killed_at
            lost += len(set(ids) - delivered)
            if not failover_s:
                raise RuntimeError(f"kill {kill}: no result came from a new leader")
            per_kill.append(
                {"kill": kill, "agent_died_too": with_agent, "failover_s": round(failover_s, 3)}
            )
            await cluster.restart_controller(leader)
            if with_agent:
                await cluster.restart_agent(cluster.agents[node])
    times = [k["failover_s"] for k in per_kill]
    return {
        "workload": "client_failover",
        "kills": kills,
        "colocated_fraction": colocated_fraction,
        "failover_s": _percentiles(times),
        "with_agent_death_s": _percentiles(
            [k["failover_s"] for k in per_kill if k["agent_died_too"]]
        ),
        "without_agent_death_s": _percentiles(
            [k["failover_s"] for k in per_kill if not k["agent_died_too"]]
        ),
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
