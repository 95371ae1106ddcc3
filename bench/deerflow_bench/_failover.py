"""Benchmarks of issue #3 (`deerflow bench failover`, `deerflow bench journal`): real etcd,
controller and agent processes on loopback; one JSON object out.

- **agent loss**: from SIGKILL of an agent to its attempts RUNNING on another agent (target
  <= 3 s). The stream's break is how a dead process is noticed. Also from SIGSTOP (a hung
  agent whose socket stays open): then the lease's expiry (agent ``--lease-ttl``, 5 s) and the
  leader's one-second grace are what notice it.
- **leader failover**: from SIGKILL of the leader to the first DISPATCHED event of the new
  leader (target <= 5 s): lease expiry (``--lease-ttl``, 3 s), election, journal restore and
  the agents' reconnect (which ends the reconnect grace early).
- **client-felt failover** (``--kills``, ``_failover_client``): from SIGKILL of the
  leader, sometimes with the agent on its node, to the first result a streaming client
  receives from the new leader (target <= 5 s), with lost and duplicated results counted.
- **journal cost**: no-op throughput of a leader with the journal (etcd) against embedded mode
  (no etcd, no journal), alternating rounds (target: at most 20 % slower).

Times are taken from the controllers' event timestamps (wall clock, same machine) against the
wall-clock time of the kill, so they include everything a client would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from deerflow_common.etcd import EtcdClient, Keys, LocalEtcd
from deerflow_controller.client import AsyncClient, Task

from ._failover_client import client_failover
from ._launcher import HaCluster
from ._throughput import machine, noop

_PREFIX = "/deerflow-bench/"


@contextlib.asynccontextmanager
async def _etcd() -> AsyncIterator[LocalEtcd]:
    with tempfile.TemporaryDirectory(prefix="deerflow-bench-etcd-") as tmp:
        server = LocalEtcd(Path(tmp) / "data", fast_election=False)
        await asyncio.to_thread(server.start)
        try:
            yield server
        finally:
            await asyncio.to_thread(server.stop)


async def _agent_loss_once(
    etcd: LocalEtcd, round_no: int, how: signal.Signals = signal.SIGKILL
) -> float:
    """Two agents with 4 slots each run 4 long tasks (two each); one is killed; seconds until
    its tasks run on the other, which has the free slots."""
    prefix = f"{_PREFIX}agent-{how.name}-{round_no}/"
    async with (
        HaCluster(
            etcd.endpoint, prefix=prefix, controllers=2, agents=2, agent_args=["--slots", "4"]
        ) as cluster,
        AsyncClient(cluster.addresses, timeout_s=60) as client,
    ):
        await client.agents(wait_for=2)
        job = await client.submit(
            [Task(f"t{i}", "sleep", {"seconds": 60}) for i in range(4)], name="agent-loss"
        )
        running: dict[str, str] = {}
        victim_tasks: set[str] = set()
        killed_at = 0.0
        victim_id = ""
        async for ev in client.events(job.job_id, timeout_s=60):
            if ev.state != "RUNNING":
                continue
            if not killed_at:
                running[ev.task_id] = ev.agent_id
                if len(running) == 4:
                    victim = cluster.agents[0]
                    victim_id = victim.name
                    victim_tasks = {t for t, a in running.items() if a == victim_id}
                    killed_at = time.time()
                    victim.signal(how)
            elif ev.task_id in victim_tasks and ev.agent_id != victim_id:
                victim_tasks.discard(ev.task_id)
                if not victim_tasks:
                    if how == signal.SIGSTOP:
                        victim.signal(signal.SIGCONT)  # let it drain and exit
                    return ev.time - killed_at
    raise RuntimeError("the victim's tasks never ran elsewhere")


async def _leader_failover_once(etcd: LocalEtcd, round_no: int) -> dict[str, float]:
    """Kill the leader mid-run; seconds until the new leader restored the journal and until
    its first dispatch."""
    prefix = f"{_PREFIX}leader-{round_no}/"
    async with HaCluster(
        etcd.endpoint, prefix=prefix, controllers=2, agents=2, agent_args=["--slots", "8"]
    ) as cluster:
        leader = await cluster.leader()
        async with AsyncClient(cluster.addresses, timeout_s=60) as client:
            await client.agents(wait_for=2)
            job = await client.submit(
                [Task(f"t{i}", "sleep", {"seconds": 0.2}) for i in range(400)], name="failover"
            )
            killed_at = 0.0
            finished = 0
            takeover = dispatch = 0.0
            async for ev in client.events(job.job_id, timeout_s=120):
                if not killed_at:
                    if ev.state == "SUCCEEDED":
                        finished += 1
                        if finished == 50:
                            killed_at = time.time()
                            leader.signal(signal.SIGKILL)
                    continue
                if ev.time <= killed_at:
                    continue  # the old leader's log, still being streamed
                takeover = takeover or ev.time
                if ev.state == "DISPATCHED":
                    dispatch = ev.time
                    break
            if not dispatch:
                raise RuntimeError("the new leader never dispatched")
            done = await client.wait(job.job_id, timeout_s=120)
            if len(done) != 400 or not all(r.ok for r in done.values()):
                raise RuntimeError("the run did not complete after the failover")
    return {"restored_s": takeover - killed_at, "first_dispatch_s": dispatch - killed_at}


async def failover(rounds: int, kills: int = 10, colocated_fraction: float = 0.5) -> dict[str, Any]:
    """``rounds`` of each agent-loss and first-dispatch measurement (0 skips them), then
    ``kills`` leader SIGKILLs as a streaming client feels them (``_failover_client``)."""
    out: dict[str, Any] = {"workload": "failover", "rounds": rounds}
    async with _etcd() as etcd:
        if rounds:
            out.update(await _server_side(etcd, rounds))
        if kills:
            out["client"] = await client_failover(etcd, kills, colocated_fraction)
    out["machine"] = machine()
    return out


async def _server_side(etcd: LocalEtcd, rounds: int) -> dict[str, Any]:
    agent_loss = [await _agent_loss_once(etcd, i) for i in range(rounds)]
    # A hung agent (SIGSTOP): its socket stays open, so only its lease (5 s) plus the
    # leader's one-second grace give it away.
    agent_hang = [await _agent_loss_once(etcd, i, signal.SIGSTOP) for i in range(rounds)]
    leader = [await _leader_failover_once(etcd, i) for i in range(rounds)]
    dispatch = [r["first_dispatch_s"] for r in leader]
    restored = [r["restored_s"] for r in leader]
    return {
        "agent_loss_to_running_elsewhere_s": _summary(agent_loss),
        "agent_loss_target_s": 3.0,
        "agent_sigstop_to_running_elsewhere_s": _summary(agent_hang),
        "agent_lease_ttl_s": 5,
        "leader_kill_to_restored_s": _summary(restored),
        "leader_kill_to_first_dispatch_s": _summary(dispatch),
        "leader_failover_target_s": 5.0,
        "lease_ttl_s": 3,
    }


async def journal(
    tasks: int, agents: int, slots: int, prefetch: int, rounds: int
) -> dict[str, Any]:
    """No-op throughput, journal on (a leader on etcd) against off (embedded), alternating."""
    on: list[float] = []
    off: list[float] = []
    txns: list[int] = []
    async with _etcd() as etcd:
        for i in range(rounds):
            off.append((await noop(tasks, agents, slots, prefetch))["tasks_per_s"])
            result = await _noop_ha(etcd, f"{_PREFIX}journal-{i}/", tasks, agents, slots, prefetch)
            on.append(result["tasks_per_s"])
            txns.append(result["journal_records"])
    best_on, best_off = max(on), max(off)
    med_on, med_off = statistics.median(on), statistics.median(off)
    return {
        "workload": "journal",
        "tasks": tasks,
        "rounds": rounds,
        "journal_on_tasks_per_s": on,
        "journal_off_tasks_per_s": off,
        "median_cost_pct": round(100 * (1 - med_on / med_off), 1),
        "best_cost_pct": round(100 * (1 - best_on / best_off), 1),
        "target_cost_pct": 20.0,
        "journal_keys_after_run": txns,
        "agents": agents,
        "slots": slots,
        "prefetch": prefetch,
        "machine": machine(),
    }


async def _noop_ha(
    etcd: LocalEtcd, prefix: str, tasks: int, agents: int, slots: int, prefetch: int
) -> dict[str, Any]:
    work = [Task(f"t{i}", "echo", f"{i:08d}".encode()) for i in range(tasks)]
    async with HaCluster(
        etcd.endpoint,
        prefix=prefix,
        controllers=1,
        agents=agents,
        agent_args=["--slots", str(slots)],
        controller_args=["--prefetch", str(prefetch)],
    ) as cluster:
        async with AsyncClient(cluster.addresses, timeout_s=60) as client:
            await client.agents(wait_for=agents, timeout_s=30)
            started = time.perf_counter()
            job = await client.submit(work, name="bench-noop-journal")
            n = 0
            async for _ in job.results():
                n += 1
            seconds = time.perf_counter() - started
        async with EtcdClient(etcd.endpoint) as etcd_client:
            records = len((await etcd_client.get_prefix(Keys(prefix).journal_prefix)).kvs)
    return {"tasks_per_s": round(n / seconds, 1), "journal_records": records}


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
    }
