"""The SDK through a failover, against the controller's real JobService behind its real leader
gate, served in-process on loopback (two controllers: the leader, and a standby that names it).
The gate's term is switched the way the leadership loop switches it, so the moment the standby
starts leading is known exactly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from deerflow_controller.client import AsyncClient
from deerflow_controller.config import ControllerConfig
from deerflow_controller.core.model import TaskSpec
from deerflow_controller.ha.leader_gate import LeaderGate, Term
from deerflow_controller.service.job_service import JobService
from deerflow_controller.service.shell import Shell
from deerflow_protos import client_pb2_grpc

pytestmark = pytest.mark.timeout(60)

_WATCH = "/deerflow.v1.JobService/WatchJob"


class _WatchCounter(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Calls ``after(n)`` once the n-th WatchJob call has been routed (its handler chosen)."""

    def __init__(self, after: Callable[[int], None]) -> None:
        self.calls = 0
        self.after = after

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if details.method == _WATCH:
            self.calls += 1
            self.after(self.calls)
        return handler


def _controller_with_job(cancelled: list[str]) -> Shell:
    """A controller's state holding job-1 (tasks a and b) with ``cancelled`` finished."""
    shell = Shell(ControllerConfig())
    now = shell.clock()
    specs = [TaskSpec("a", "echo", b"x"), TaskSpec("b", "echo", b"y")]
    shell.scheduler.submit("job-1", "", specs, now)
    shell.scheduler.cancel("job-1", cancelled, "finished for the test", now)
    shell.flush()
    return shell


@contextlib.asynccontextmanager
async def _serve(
    shell: Shell, gate: LeaderGate, *extra: grpc.aio.ServerInterceptor
) -> AsyncIterator[grpc.aio.Server]:
    server = grpc.aio.server(interceptors=[*extra, gate])
    client_pb2_grpc.add_JobServiceServicer_to_server(JobService(shell), server)
    gate.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


async def test_a_streaming_client_reaches_the_new_leader_at_once_not_after_a_long_backoff() -> None:
    loop = asyncio.get_running_loop()
    old_gate, new_gate = LeaderGate(""), LeaderGate("")
    old_gate.term = Term(1, None)
    promoted = asyncio.Event()
    promoted_at = 0.0
    refusals_before_promotion = 6  # enough for any backoff to have grown to its cap

    def promote_after(calls: int) -> None:
        nonlocal promoted_at
        if calls == refusals_before_promotion:
            # This call was refused already (the gate chose its handler); the next one is served.
            new_gate.term = Term(2, None)
            new_gate.leader_address = new_gate.address
            promoted_at = loop.time()
            promoted.set()

    async with (
        _serve(_controller_with_job(["a"]), old_gate) as old_server,
        _serve(_controller_with_job(["a", "b"]), new_gate, _WatchCounter(promote_after)),
    ):
        # The standby names the old leader, as it does until the old leader's lease expires.
        new_gate.leader_address = old_gate.address
        async with AsyncClient(f"{old_gate.address},{new_gate.address}", timeout_s=30) as client:
            results = client.results("job-1", timeout_s=40)
            assert (await anext(results)).task_id == "a"
            await old_server.stop(0)  # the leader dies
            second = await anext(results)
            received_at = loop.time()
            assert second.task_id == "b"  # resumed there, "a" not delivered again
            assert promoted.is_set()
            assert [r.task_id async for r in results] == []  # the job is done: nothing more
    # A pause longer than the SDK's short cap (0.375 s with jitter) would show here; the old
    # backoff (2 s cap, twice between two tries of the same controller) took 2 s or more.
    assert received_at - promoted_at < 1.0
