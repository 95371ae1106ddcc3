"""What an agent that has joined can do to the others is bounded (issue #17 finding 3), against a
real controller and hand-written agent streams: a result, or an input fetch, counts only from
the agent given that attempt; a Hello cannot redefine another agent's handler traits, nor take
over a connected agent's id; a number out of range ends the sender's stream with
INVALID_ARGUMENT and leaves ``/api/stats`` answering."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest

from deerflow_bench import Cluster
from deerflow_common.etcd.server import free_port
from deerflow_controller.client import AsyncClient, Task
from deerflow_protos import agent_pb2, agent_pb2_grpc, common_pb2

from .conftest import ClusterFactory

SHORT = 400


def hello(
    agent_id: str,
    *,
    instance: str = "",
    labels: dict[str, str] | None = None,
    cpu: bool = False,
    items_field: str = "",
) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(
        hello=agent_pb2.Hello(
            agent_id=agent_id,
            instance=instance or secrets.token_hex(16),
            slots=2,
            labels=labels or {},
            handlers=[
                agent_pb2.HandlerInfo(
                    name="echo",
                    kind=agent_pb2.CPU if cpu else agent_pb2.IO,
                    items_field=items_field,
                )
            ],
        )
    )


class RawAgent:
    """One hand-written agent stream: send what the test says, read what the controller says."""

    def __init__(self, stub: agent_pb2_grpc.AgentServiceStub, first: agent_pb2.AgentMessage):
        self.hello = first.hello
        self._out: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()
        self._out.put_nowait(first)
        self.call = stub.Connect(self._requests())

    async def _requests(self) -> AsyncIterator[agent_pb2.AgentMessage]:
        while (msg := await self._out.get()) is not None:
            yield msg

    def send(self, msg: agent_pb2.AgentMessage) -> None:
        self._out.put_nowait(msg)

    async def next(self, kind: str) -> agent_pb2.ControllerMessage:
        """The next controller message of ``kind`` (others are skipped)."""
        while True:
            msg: agent_pb2.ControllerMessage = await asyncio.wait_for(self.call.read(), 30)
            assert msg is not grpc.aio.EOF, f"stream ended waiting for {kind}"
            if msg.WhichOneof("msg") == kind:
                return msg

    def result(self, ref: agent_pb2.AttemptRef, output: bytes) -> None:
        self.send(
            agent_pb2.AgentMessage(
                results=agent_pb2.ResultBatch(
                    results=[agent_pb2.Result(ref=ref, ok=True, output=output)]
                )
            )
        )

    def close(self) -> None:
        self._out.put_nowait(None)
        self.call.cancel()


async def refused(
    stub: agent_pb2_grpc.AgentServiceStub, first: agent_pb2.AgentMessage
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Connect(iter([first]), timeout=30):
            pass
    return info.value


async def test_a_result_from_an_agent_never_given_the_attempt_does_not_end_the_task(
    controller_alone: Cluster,
) -> None:
    async with (
        grpc.aio.insecure_channel(controller_alone.address) as channel,
        AsyncClient(controller_alone.address, timeout_s=30) as client,
    ):
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        real = RawAgent(stub, hello("real", labels={"who": "real"}))
        impostor = RawAgent(stub, hello("impostor", labels={"who": "impostor"}))
        try:
            await real.next("welcome")
            await impostor.next("welcome")
            job = await client.submit(
                [
                    Task("victim", "echo", payload=b"x", labels={"who": "real"}),
                    Task("own", "echo", payload=b"y", labels={"who": "impostor"}),
                ]
            )
            (victim,) = (await real.next("assignments")).assignments.assignments
            (own,) = (await impostor.next("assignments")).assignments.assignments
            forged = [
                agent_pb2.Result(ref=victim.ref, ok=True, output=b"forged"),
                agent_pb2.Result(
                    ref=agent_pb2.AttemptRef(job_id=job.job_id, task_id="victim", attempt=2),
                    ok=True,
                    output=b"forged",
                ),
                # Its own attempt last, in the same batch: once it is done, so are the forgeries.
                agent_pb2.Result(ref=own.ref, ok=True, output=b"mine"),
            ]
            impostor.send(agent_pb2.AgentMessage(results=agent_pb2.ResultBatch(results=forged)))
            assert (await job.result("own")).output == b"mine"
            status = await client.get_task(job.job_id, "victim")
            assert status.state in (common_pb2.DISPATCHED, common_pb2.RUNNING), status
            real.result(victim.ref, b"real")
            done = await job.result("victim")
            assert (done.state, done.output, done.agent_id) == ("SUCCEEDED", b"real", "real")
        finally:
            real.close()
            impostor.close()


async def test_only_the_agent_holding_an_attempt_fetches_its_inputs(
    make_cluster: ClusterFactory,
) -> None:
    big = b"p" * 5000
    async with (
        make_cluster(0, controller_args=("--inline-input-bytes", "1000")) as cluster,
        grpc.aio.insecure_channel(cluster.address) as channel,
        AsyncClient(cluster.address, timeout_s=30) as client,
    ):
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        real = RawAgent(stub, hello("real", labels={"who": "real"}))
        impostor = RawAgent(stub, hello("impostor", labels={"who": "impostor"}))
        try:
            await real.next("welcome")
            await impostor.next("welcome")
            await client.submit(
                [
                    Task("p", "echo", labels={"who": "real"}),
                    Task("c", "echo", depends_on=["p"], inputs=["p"], labels={"who": "real"}),
                ]
            )
            (p,) = (await real.next("assignments")).assignments.assignments
            real.result(p.ref, big)
            (c,) = (await real.next("assignments")).assignments.assignments
            assert c.inputs[0].reference

            async def fetch(agent_id: str, instance: str) -> bytes:
                request = agent_pb2.FetchInputRequest(
                    ref=c.ref, task_id="p", agent_id=agent_id, instance=instance
                )
                return b"".join([x.data async for x in stub.FetchInput(request, timeout=30)])

            cases = [
                (("impostor", impostor.hello.instance), grpc.StatusCode.NOT_FOUND, "not given"),
                (("real", impostor.hello.instance), grpc.StatusCode.PERMISSION_DENIED, "instance"),
                (("real", ""), grpc.StatusCode.PERMISSION_DENIED, "instance"),
            ]
            for who, code, fragment in cases:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await fetch(*who)
                details = info.value.details() or ""
                assert info.value.code() == code and fragment in details, details
                assert len(details) < SHORT
            assert await fetch("real", real.hello.instance) == big
        finally:
            real.close()
            impostor.close()


async def test_a_hello_redefining_a_connected_handlers_traits_is_refused(
    controller_alone: Cluster,
) -> None:
    async with (
        grpc.aio.insecure_channel(controller_alone.address) as channel,
        AsyncClient(controller_alone.address, timeout_s=30) as client,
    ):
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        real = RawAgent(stub, hello("real", cpu=True, items_field="items"))
        try:
            await real.next("welcome")
            error = await refused(stub, hello("impostor"))
            details = error.details() or ""
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, details
            assert "handler 'echo' declares kind='io'" in details and len(details) < SHORT
            error = await refused(stub, hello("impostor", cpu=True))
            assert "items_field=''" in (error.details() or "")
            # The same traits are welcome; the first agent's definition stands.
            same = RawAgent(stub, hello("twin", cpu=True, items_field="items"))
            await same.next("welcome")
            same.close()
            # A split job still splits as the connected agents declared.
            payload = json.dumps({"items": list(range(40))}).encode()
            job = await client.submit([Task("t", "echo", payload=payload)])
            assert (await real.next("assignments")).assignments.assignments
            assert [a.agent_id for a in await client.agents()] == ["real"]
            await job.cancel()
        finally:
            real.close()


async def test_a_hello_cannot_take_over_a_connected_agents_id(
    controller_alone: Cluster,
) -> None:
    async with (
        grpc.aio.insecure_channel(controller_alone.address) as channel,
        AsyncClient(controller_alone.address, timeout_s=30) as client,
    ):
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        real = RawAgent(stub, hello("real"))
        try:
            await real.next("welcome")
            error = await refused(stub, hello("real"))  # another instance
            details = error.details() or ""
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS, details
            assert "connected on another stream" in details and len(details) < SHORT
            # The real agent's stream is untouched: it still gets work.
            job = await client.submit([Task("t", "echo", payload=b"x")])
            (a,) = (await real.next("assignments")).assignments.assignments
            real.result(a.ref, b"ok")
            assert (await job.result("t")).agent_id == "real"
        finally:
            real.close()


async def test_a_heartbeat_with_a_nan_ends_the_stream_and_stats_still_answer(
    make_cluster: ClusterFactory,
) -> None:
    port = free_port()
    async with (
        make_cluster(0, controller_args=("--http-port", str(port))) as cluster,
        grpc.aio.insecure_channel(cluster.address) as channel,
    ):
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        cases = [
            (agent_pb2.Heartbeat(cpu_percent=float("nan")), "Heartbeat cpu_percent is nan"),
            (agent_pb2.Heartbeat(memory_percent=float("inf")), "memory_percent is inf"),
            (agent_pb2.Heartbeat(process_cpu_percent=-5.0), "process_cpu_percent is -5.0"),
        ]
        for beat, fragment in cases:
            agent = RawAgent(stub, hello("odd"))
            try:
                await agent.next("welcome")
                agent.send(agent_pb2.AgentMessage(heartbeat=beat))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    while await asyncio.wait_for(agent.call.read(), 30) is not grpc.aio.EOF:
                        pass
                details = info.value.details() or ""
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
                assert fragment in details and len(details) < SHORT, details
            finally:
                agent.close()
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/api/stats") as resp,
            ):
                assert resp.status == 200, await resp.text()
