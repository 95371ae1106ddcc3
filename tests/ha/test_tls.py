"""An HA pair under mutual TLS: the standby's refusal points the client at the leader, agents
follow it, and a job runs; after the leader is stopped the other takes over over TLS too."""

from __future__ import annotations

from pathlib import Path

import pytest

from deerflow_bench import HaCluster
from deerflow_common.etcd import Keys, LocalEtcd
from deerflow_common.tls import CertificateDir, make_certificates
from deerflow_controller.client import AsyncClient, Task

pytestmark = pytest.mark.timeout(120)


async def test_an_ha_pair_under_mutual_tls_runs_jobs_across_a_failover(
    etcd_server: LocalEtcd, keys: Keys, tmp_path: Path
) -> None:
    make_certificates(tmp_path, agents=["agent-1"])
    certs = CertificateDir(tmp_path)
    cluster = HaCluster(
        etcd_server.endpoint,
        prefix=keys.prefix,
        controllers=2,
        agents=1,
        agent_args=["--slots", "2"],
        tls=certs,
        mutual_tls=True,
    )
    async with cluster, AsyncClient(cluster.addresses, tls=cluster.client_tls) as client:
        await client.agents(wait_for=1, timeout_s=30)
        job = await client.submit([Task("a", "echo", {"n": 1})])
        assert (await job.result("a", timeout_s=30)).ok
        await (await cluster.leader()).stop()
        new_leader = await cluster.leader()
        assert new_leader.returncode is None
        job = await client.submit([Task("b", "echo", {"n": 2})])
        assert (await job.result("b", timeout_s=60)).output == b'{"n":2}'
