"""Queued tasks on a real controller (issue #19, item 4): ``deerflow bench scale``'s ``queued``
section.

A ``deerflow-controller`` process with no agent, so every task queues; the client submits
``tasks`` no-op tasks through the SDK in jobs of ``job_size`` and the controller's RSS (psutil)
is read before the first submit and after the last, once ``GetStats`` reports every task
queued. The admission limits (``--max-queued-tasks`` 500,000 and
``--max-queued-tasks-per-tenant`` 100,000 by default) are raised by flag to ``tasks`` for this
run, and the run says so in its JSON (``controller_args``).
"""

from __future__ import annotations

import time
from typing import Any

from deerflow_controller.client import AsyncClient, Task

from ._launcher import Cluster
from ._throughput import RssSampler

__all__ = ["queued"]


async def queued(tasks: int, job_size: int, payload_bytes: int = 8) -> dict[str, Any]:
    """Submit ``tasks`` tasks (``payload_bytes`` each) in jobs of ``job_size`` to a controller
    with no agent; returns RSS growth per queued task and the submit rate. Blocks until done;
    the controller is stopped on return."""
    n_jobs = -(-tasks // job_size)
    controller_args = [
        "--max-queued-tasks",
        str(max(tasks, 1)),
        "--max-queued-tasks-per-tenant",
        str(max(tasks, 1)),
        "--max-jobs-per-tenant",
        str(max(n_jobs, 1)),
    ]
    payload = b"x" * payload_bytes
    async with Cluster(0, controller_args=controller_args) as cluster:
        assert cluster.controller is not None
        rss = RssSampler(cluster.controller.pid)
        async with AsyncClient(cluster.address, timeout_s=120) as client:
            await client.stats()
            rss0 = rss.current()
            started = time.perf_counter()
            left = tasks
            for j in range(n_jobs):
                size = min(job_size, left)
                await client.submit(
                    [Task(f"t{i}", "echo", payload) for i in range(size)], name=f"queued-{j}"
                )
                left -= size
            submit_s = time.perf_counter() - started
            stats = await client.stats()
            rss1 = rss.current()
    growth = rss1 - rss0
    return {
        "tasks": tasks,
        "jobs": n_jobs,
        "job_size": job_size,
        "payload_bytes": payload_bytes,
        "queued": stats.queued,
        "submit_s": round(submit_s, 3),
        "submitted_per_s": round(tasks / submit_s, 1) if submit_s > 0 else None,
        "controller_rss_mb_idle": round(rss0 / (1 << 20), 1),
        "controller_rss_mb": round(rss1 / (1 << 20), 1),
        "bytes_per_queued_task": round(growth / max(1, tasks)),
        "target_bytes_per_queued_task": 2048,
        "controller_args": controller_args,
    }
