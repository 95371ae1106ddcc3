"""The agent's write pacing (one message per 2 ms on a busy stream) never holds back a result
the controller is waiting on to refill the agent: such a result is written at once, while other
results still wait out the interval and share a message. Observed through the writes a fake
call receives, with the interval stretched to an hour: no timing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from deerflow_agent import Attempt, Handler, Outcome, Runtime, TaskContext, _stream
from deerflow_agent._session import Agent
from deerflow_agent._stream import Results, Stream
from deerflow_protos import agent_pb2


class FakeCall:
    def __init__(self) -> None:
        self.messages: list[agent_pb2.AgentMessage] = []
        self.written = asyncio.Event()

    async def write(self, msg: agent_pb2.AgentMessage) -> None:
        self.messages.append(msg)
        self.written.set()

    async def done_writing(self) -> None:
        pass


def _outcome(task_id: str) -> Outcome:
    return Outcome(("job", task_id, 1), "echo", True, b"", None, 0.0, 0.0)


def _ids(msg: agent_pb2.AgentMessage) -> list[str]:
    return [r.ref.task_id for r in msg.results.results]


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.fixture
def paced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_stream, "_MIN_WRITE_INTERVAL_S", 3600.0)


async def _writes(call: FakeCall, n: int) -> None:
    while len(call.messages) < n:
        call.written.clear()
        await call.written.wait()


@pytest.mark.usefixtures("paced")
async def test_an_urgent_result_ends_the_writers_pause_and_takes_queued_ones_along() -> None:
    call = FakeCall()
    stream = Stream(call, "addr", agent_pb2.Welcome(epoch=1))
    writer = asyncio.create_task(stream.write_loop())
    try:
        stream.send(Results([_outcome("t1")]))
        await _writes(call, 1)  # the first write of a stream is not paced
        stream.send(Results([_outcome("t2")]))
        await _turns()
        assert len(call.messages) == 1  # paced: waits out the (hour-long) interval
        stream.send(Results([_outcome("t3")]), urgent=True)
        await asyncio.wait_for(_writes(call, 2), 10)
        assert _ids(call.messages[1]) == ["t2", "t3"]
        stream.send(Results([_outcome("t4")]))
        await _turns()
        assert len(call.messages) == 2  # pacing resumes after the urgent write
    finally:
        writer.cancel()


@pytest.mark.usefixtures("paced")
async def test_an_urgent_result_queued_while_the_writer_sleeps_is_not_paced() -> None:
    call = FakeCall()
    stream = Stream(call, "addr", agent_pb2.Welcome(epoch=1))
    writer = asyncio.create_task(stream.write_loop())
    try:
        stream.send(Results([_outcome("t1")]))
        await _writes(call, 1)
        await _turns()  # the writer waits for work
        stream.send(Results([_outcome("t2")]), urgent=True)
        await asyncio.wait_for(_writes(call, 2), 10)
        assert _ids(call.messages[1]) == ["t2"]
    finally:
        writer.cancel()


async def test_results_are_urgent_exactly_when_nothing_waits_in_the_agents_queue() -> None:
    release = asyncio.Event()

    async def block(ctx: TaskContext, payload: bytes) -> bytes:
        await release.wait()
        return payload

    runtime = Runtime(
        {"block": Handler("block", block)},
        slots=1,
        cpu_workers=1,
        on_started=lambda key, t: None,
        on_finished=lambda o: None,
    )
    session: Any = SimpleNamespace(runtime=runtime)
    assert Agent.results_urgent(session)  # idle: a lone result goes at once
    runtime.submit([Attempt(("j", f"t{i}", 1), "block", b"", 0.0) for i in range(2)])
    await _turns()
    assert not Agent.results_urgent(session)  # one queued: the freed slot refills locally
    release.set()
    await runtime.wait_idle()
    assert Agent.results_urgent(session)
    await runtime.aclose()
