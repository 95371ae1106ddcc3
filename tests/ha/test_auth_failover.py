"""Issue #17 item 2: a job's owner survives a failover. The new leader rebuilds jobs from the
journal (the SubmitJobRequest as accepted, its tasks' tenants filled in from the submitting
token), so another tenant still gets NOT_FOUND and the owner still gets its results."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from deerflow_bench import HaCluster
from deerflow_common.etcd import LocalEtcd
from deerflow_controller.client import AsyncClient, NotFoundError, Task
from tests.auth_files import Tokens, auth_toml, write_atomically


async def test_a_restored_job_still_belongs_to_its_tenant(
    etcd_server: LocalEtcd,
    make_ha_cluster: Callable[..., HaCluster],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens = Tokens()
    auth_file = tmp_path / "auth.toml"
    write_atomically(auth_file, auth_toml(tokens))
    monkeypatch.setenv("DEERFLOW_JOIN_TOKEN", tokens.join)  # the agents' environment
    async with make_ha_cluster(
        etcd_server.endpoint,
        controllers=1,
        agents=1,
        slots=4,
        controller_args=("--auth-file", str(auth_file)),
    ) as cluster:
        first = cluster.controllers[0]
        ids = [f"t{i:02d}" for i in range(12)]
        async with AsyncClient(first.address, timeout_s=60, token=tokens.alice) as alice:
            await alice.agents(wait_for=1)
            job = await alice.submit(
                [Task(t, "sleep", {"seconds": 0.5}) for t in ids], job_id="alice-long-job"
            )
        first.signal(signal.SIGKILL)
        await first.wait(30)
        successor = await cluster.add_controller()
        assert await cluster.leader() is successor
        async with (
            AsyncClient(successor.address, timeout_s=60, token=tokens.bob) as bob,
            AsyncClient(successor.address, timeout_s=60, token=tokens.alice) as alice,
        ):
            with pytest.raises(NotFoundError):
                await bob.get_job(job.job_id)
            with pytest.raises(NotFoundError):
                await bob.cancel(job.job_id)
            results = await alice.wait(job.job_id, timeout_s=120)
            assert sorted(results) == ids and all(r.ok for r in results.values())
