"""The SDK inside a namespace: a client host the test drives over stdin and stdout.

The test process lives in the root network namespace, which has no path to the hosts' 10.77.0.x
addresses; this script runs inside the client host (``ip netns exec``) and does there what the
test asks, one JSON object per line each way::

    -> {"id": 1, "op": "submit", "job_id": "j", "tasks": [["t0", "sleep", "{...}"]]}
    <- {"id": 1, "ok": true, "result": 1}

Requests run concurrently (a long wait does not hold up the others), each within its
``timeout`` (s, default 60); a failure answers ``{"ok": false, "error": "..."}``. The waits poll
the state they wait for (every 50-100 ms): a controller offers no watch of agents or metrics.
Run as ``python driver.py CONTROLLERS`` (comma-separated).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deerflow_controller.client import AsyncClient, Task, TaskEvent
from deerflow_controller.ha.leader_gate import LEADER_METADATA
from deerflow_protos import admin_pb2, admin_pb2_grpc

Op = Callable[..., Awaitable[Any]]


def _event(ev: TaskEvent) -> dict[str, Any]:
    return {
        "task_id": ev.task_id,
        "state": ev.state,
        "attempt": ev.attempt,
        "agent_id": ev.agent_id,
        "output": ev.output.decode(errors="replace"),
        "error": ev.error,
        "detail": ev.detail,
        "seq": ev.seq,
    }


class Driver:
    def __init__(self, controllers: str) -> None:
        self.controllers = controllers.split(",")
        self.client = AsyncClient(controllers, timeout_s=60)
        self.watches: dict[str, tuple[list[dict[str, Any]], asyncio.Task[None]]] = {}
        self.changed = asyncio.Event()
        self.seen = ""
        """What the last wait saw, for its timeout message."""

    # ------------------------------------------------------------------ controllers

    async def health(self, address: str) -> str:
        """SERVING, NOT_SERVING, or UNREACHABLE (no answer within a second)."""
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1.0
                )
            except grpc.aio.AioRpcError:
                return "UNREACHABLE"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def wait_health(self, address: str, status: str) -> float:
        """Poll ``address``'s health every 50 ms until it is ``status``; the seconds it took."""
        start = time.monotonic()
        while (seen := await self.health(address)) != status:
            self.seen = f"{address} is {seen}"
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    async def leader(self, exclude: str = "") -> str:
        """The controller that reports SERVING (polled every 100 ms), other than ``exclude``."""
        while True:
            candidates = [c for c in self.controllers if c != exclude]
            states = await asyncio.gather(*(self.health(c) for c in candidates))
            for address, state in zip(candidates, states, strict=True):
                if state == "SERVING":
                    return address
            self.seen = f"controllers {dict(zip(candidates, states, strict=True))}"
            await asyncio.sleep(0.1)

    async def pointer(self, address: str) -> str:
        """The leader a standby names when it refuses a call ("" when it names none)."""
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                await admin_pb2_grpc.AdminServiceStub(channel).ListAgents(
                    admin_pb2.ListAgentsRequest(), timeout=5.0
                )
            except grpc.aio.AioRpcError as e:
                return str(dict(e.trailing_metadata() or ()).get(LEADER_METADATA, ""))
        return address  # it answered: it leads

    async def wait_pointer(self, address: str, leader: str) -> None:
        """Poll every 100 ms until the controller at ``address`` names ``leader``."""
        while (named := await self.pointer(address)) != leader:
            self.seen = f"{address} names {named!r} as the leader"
            await asyncio.sleep(0.1)

    async def agents(self, address: str = "") -> list[str]:
        """Agents connected to the leader (or to ``address``, without following redirects)."""
        if not address:
            return sorted(a.agent_id for a in await self.client.agents(timeout_s=10))
        async with AsyncClient(address, timeout_s=10) as one:
            return sorted(a.agent_id for a in await one.agents())

    async def wait_agents(self, ids: list[str], absent: Sequence[str] = ()) -> list[str]:
        """Poll the leader's agent list every 100 ms until it includes ``ids`` and none of
        ``absent``."""
        listed: list[str] = []
        while not set(ids) <= set(listed) or set(absent) & set(listed):
            try:
                listed = await self.agents()
                self.seen = f"agents listed: {listed}"
            except Exception as e:  # no leader yet, or moving: ask again
                self.seen = f"agents not listed: {type(e).__name__}: {e}"
            await asyncio.sleep(0.1)
        return listed

    async def metric(self, url: str, name: str) -> float:
        """The sum of a Prometheus series' samples at ``url`` (0 when absent)."""

        def fetch() -> str:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return str(reply.read().decode())

        text = await asyncio.to_thread(fetch)
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def wait_metric(
        self, url: str, name: str, at_least: float = -math.inf, at_most: float = math.inf
    ) -> float:
        """Poll the series every 100 ms until it is within [at_least, at_most]; its value."""
        while not at_least <= (value := await self.metric(url, name)) <= at_most:
            self.seen = f"{name} at {url} is {value:g}"
            await asyncio.sleep(0.1)
        return value

    # ------------------------------------------------------------------ jobs

    async def submit(self, job_id: str, tasks: list[list[str]]) -> int:
        job = await self.client.submit([Task(t, h, p) for t, h, p in tasks], job_id=job_id)
        return job.accepted

    async def watch(self, job_id: str) -> None:
        """Collect the job's events (the SDK's stream, across failovers) in the background."""
        events: list[dict[str, Any]] = []

        async def collect() -> None:
            async for ev in self.client.events(job_id, timeout_s=300):
                events.append(_event(ev))
                self.changed.set()

        self.watches[job_id] = (events, asyncio.create_task(collect()))

    async def wait_events(
        self, job_id: str, state: str, agent_id: str = "", count: int = 1
    ) -> list[dict[str, Any]]:
        """Wait until the watched stream holds ``count`` events in ``state`` (on ``agent_id``)."""
        events, task = self.watches[job_id]
        while True:
            found = [
                e
                for e in events
                if e["state"] == state and (not agent_id or e["agent_id"] == agent_id)
            ]
            if len(found) >= count:
                return found
            self.seen = f"{len(found)} {state} events of {len(events)}"
            if task.done():
                task.result()
                raise RuntimeError(f"job {job_id} ended with {self.seen}")
            self.changed.clear()
            await self.changed.wait()

    async def finish(self, job_id: str) -> list[dict[str, Any]]:
        """Every event the watched stream delivered, once the job is done."""
        events, task = self.watches[job_id]
        self.seen = f"the job's stream is still open after {len(events)} events"
        await asyncio.shield(task)
        return events

    async def replay(self, job_id: str) -> list[dict[str, Any]]:
        """The job's whole log as the leader holds it now, read from its start."""
        return [_event(ev) async for ev in self.client.events(job_id)]

    # ------------------------------------------------------------------ the loop

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        running: set[asyncio.Task[None]] = set()
        print(json.dumps({"ready": True}), flush=True)
        while line := await reader.readline():
            task = asyncio.create_task(self.answer(json.loads(line)))
            running.add(task)
            task.add_done_callback(running.discard)
        for task in running:
            task.cancel()
        await self.client.close()

    async def answer(self, request: dict[str, Any]) -> None:
        ident = request.pop("id")
        name = request.pop("op")
        timeout_s = float(request.pop("timeout", 60))
        try:
            if name not in OPS:
                raise ValueError(f"no operation {name!r}")
            op: Op = getattr(self, name)
            async with asyncio.timeout(timeout_s):
                reply = {"id": ident, "ok": True, "result": await op(**request)}
        except TimeoutError:
            error = f"{name} did not finish within {timeout_s:g} s; last seen: {self.seen}"
            reply = {"id": ident, "ok": False, "error": error}
        except Exception as e:
            reply = {"id": ident, "ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


OPS = frozenset(
    {"health", "wait_health", "leader", "pointer", "wait_pointer", "agents", "wait_agents"}
    | {"metric", "wait_metric"}
    | {"submit", "watch", "wait_events", "finish", "replay"}
)


async def _main(controllers: str) -> None:
    # The client's channels belong to the loop that makes them: make it inside this one.
    await Driver(controllers).serve()


def main() -> None:
    asyncio.run(_main(sys.argv[1]))


if __name__ == "__main__":
    main()
