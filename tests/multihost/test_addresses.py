"""The daemons across real addresses: etcd, two controllers, two agents and a client on five
hosts of their own (network namespaces, 10.77.0.0/24), none of them on loopback.

The controllers listen on 0.0.0.0 and advertise their 10.77.0.x address. The agents are given no
controller that exists (``--controller`` names an address nobody has): the leader they reach is
the one etcd names, so what a controller advertises is what everyone uses."""

from __future__ import annotations

import json

import pytest

from .conftest import MultiHost

pytestmark = pytest.mark.timeout(180)

NOWHERE = "10.77.0.99:7400"


async def test_agents_find_the_leader_through_etcd_and_a_job_runs_on_both_hosts(
    multihost: MultiHost,
) -> None:
    driver = await multihost.start(agent_controllers=NOWHERE)
    leader = await driver.call("leader", timeout=30)
    assert leader in multihost.controllers.split(",")
    standby = next(c for c in multihost.controllers.split(",") if c != leader)
    assert await driver.call("health", address=standby) == "NOT_SERVING"
    assert await driver.call("agents", address=leader) == ["a1", "a2"]

    ids = [f"t{i:02d}" for i in range(16)]
    tasks = [[t, "tagged_sleep", json.dumps({"seconds": 0.5})] for t in ids]
    assert await driver.call("submit", job_id="across", tasks=tasks) == len(ids)
    await driver.call("watch", job_id="across")
    events = await driver.call("finish", job_id="across", timeout=120)

    terminal = [e for e in events if e["state"] in ("SUCCEEDED", "FAILED", "CANCELLED")]
    assert sorted(e["task_id"] for e in terminal) == ids, multihost.logs()
    assert {e["state"] for e in terminal} == {"SUCCEEDED"}
    for e in terminal:
        out = json.loads(e["output"])
        assert (out["task"], out["agent"], out["attempt"]) == (
            e["task_id"],
            e["agent_id"],
            e["attempt"],
        )
    # 16 half-second tasks on two agents of 4 slots: both hosts ran some.
    assert {e["agent_id"] for e in terminal} == {"a1", "a2"}
