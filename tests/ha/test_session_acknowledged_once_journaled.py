"""A submit sent over a Session stream is acknowledged only once the job is journaled, as a
SubmitJob is (so an acknowledged job survives the leader's death: tests/ha/test_failover.py).

The leader reaches etcd through a proxy the test stalls (every byte held, no reset): the job
reaches the leader's core, which shows it, but its journal record waits, and so does the
acknowledgement; when the path flows again the acknowledgement comes and the job runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from deerflow_bench import HaCluster
from deerflow_common.etcd import LocalEtcd
from deerflow_controller.client import AsyncClient, NotFoundError, Task
from deerflow_controller.client._session import SessionCall

from ..tcp_proxy import Proxy

pytestmark = pytest.mark.timeout(120)


async def test_a_session_submit_is_acknowledged_only_once_journaled(
    etcd_server: LocalEtcd, etcd_proxy: Proxy, make_ha_cluster: Callable[..., HaCluster]
) -> None:
    cluster = make_ha_cluster(
        etcd_server.endpoint,
        controllers=0,
        agents=0,
        slots=4,
        # The stall lasts well under a second; the lease outlives it by far.
        controller_args=("--lease-ttl", "10"),
    )
    async with cluster:
        leader = await cluster.add_controller(["--etcd", etcd_proxy.address])
        await cluster.add_agent("a1")
        async with AsyncClient(leader.address, timeout_s=60) as client:
            await client.agents(wait_for=1)
            await client.run([Task("warm", "echo", b"w")])  # the stream is open
            etcd_proxy.pause()  # the journal's writes wait from here
            submit = asyncio.ensure_future(
                client.submit([Task("t", "echo", b"x")], job_id="held", watch="results")
            )
            # Until the leader's core holds the job (nothing streams that: poll, bounded).
            async with asyncio.timeout(30):
                while True:
                    try:
                        await client.get_job("held")
                        break
                    except NotFoundError:
                        await asyncio.sleep(0.01)
            assert not submit.done()  # accepted by the core, not acknowledged: not journaled
            etcd_proxy.resume()
            job = await submit
            assert job.accepted == 1
            assert job._opened is not None and isinstance(job._opened[1], SessionCall)
            assert (await job.wait())["t"].output == b"x"
