"""What the controller does with a second stream under an agent id already connected, as
agent.proto says: from the same agent process (the same Hello instance), the newer stream
replaces the older one, which ends with OK (another process is refused: test_impostor_agent)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from deerflow_controller.client import AsyncClient
from deerflow_protos import agent_pb2, agent_pb2_grpc

from .conftest import ClusterFactory


def hello(agent_id: str) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(
        hello=agent_pb2.Hello(
            agent_id=agent_id,
            instance="0123456789abcdef0123456789abcdef",
            slots=1,
            handlers=[agent_pb2.HandlerInfo(name="echo", kind=agent_pb2.IO)],
        )
    )


async def held_open(
    first: agent_pb2.AgentMessage, stop: asyncio.Event
) -> AsyncIterator[agent_pb2.AgentMessage]:
    """A request stream that sends ``first`` and then stays open until ``stop`` is set."""
    yield first
    await stop.wait()


async def test_a_second_stream_of_the_same_agent_process_replaces_the_first(
    make_cluster: ClusterFactory,
) -> None:
    stop = asyncio.Event()
    async with make_cluster(0) as cluster, grpc.aio.insecure_channel(cluster.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        old = stub.Connect(held_open(hello("twin"), stop))
        assert (await asyncio.wait_for(old.read(), 30)).WhichOneof("msg") == "welcome"
        new = stub.Connect(held_open(hello("twin"), stop))
        try:
            assert (await asyncio.wait_for(new.read(), 30)).WhichOneof("msg") == "welcome"
            # The older stream is closed by the controller, without an error status ...
            assert await asyncio.wait_for(old.code(), 30) == grpc.StatusCode.OK
            # ... and the agent id stays connected, once, on the newer stream.
            async with AsyncClient(cluster.address) as client:
                assert [a.agent_id for a in await client.agents()] == ["twin"]
        finally:
            stop.set()
            new.cancel()
            old.cancel()
