"""The shell's table of agent streams holds only streams that are open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deerflow_controller.config import ControllerConfig
from deerflow_controller.service.agent_service import AgentService
from deerflow_controller.service.shell import Shell
from deerflow_protos import agent_pb2


async def test_a_stream_that_ends_before_its_hello_is_applied_is_not_listed_as_connected() -> None:
    # As a stream whose Welcome could not be written: opened, never joined, then closed.
    shell = Shell(ControllerConfig(), clock=lambda: 100.0)
    session = shell.open_session("agent-1")
    assert shell.sessions == {"agent-1": session}

    left = await shell.close_session(session)

    assert left is False  # it never joined, so it did not leave the scheduler either
    assert shell.sessions == {}
    assert "agent-1" not in shell.scheduler.agents


async def test_a_joined_stream_that_ends_leaves_the_scheduler() -> None:
    shell = Shell(ControllerConfig(), clock=lambda: 100.0)
    session = shell.open_session("agent-1")
    await shell.agent_joined(
        session, ["echo"], 4, labels={}, running=[], handler_slots={}, traits={}
    )
    assert "agent-1" in shell.scheduler.agents

    assert await shell.close_session(session) is True
    assert shell.sessions == {}
    assert "agent-1" not in shell.scheduler.agents


class _StreamThatBreaksOnWrite:
    """The part of a gRPC servicer context Connect uses, for a peer gone before its Welcome."""

    async def write(self, message: object) -> None:
        raise ConnectionResetError("the agent's stream broke")

    async def abort(self, code: object, details: str) -> None:
        raise AssertionError(f"unexpected abort: {details}")


async def test_a_stream_that_breaks_while_its_welcome_is_written_leaves_no_session() -> None:
    shell = Shell(ControllerConfig(), clock=lambda: 100.0)
    hello = agent_pb2.Hello(
        agent_id="agent-1", slots=4, handlers=[agent_pb2.HandlerInfo(name="echo")]
    )

    async def messages() -> AsyncIterator[agent_pb2.AgentMessage]:
        yield agent_pb2.AgentMessage(hello=hello)

    with pytest.raises(ConnectionResetError):
        await AgentService(shell).Connect(messages(), _StreamThatBreaksOnWrite())

    assert shell.sessions == {}  # DrainAgent and the stats no longer list it as connected
    assert "agent-1" not in shell.scheduler.agents


async def test_only_the_same_agent_process_or_a_silent_stream_gives_up_its_id() -> None:
    now = [100.0]
    shell = Shell(ControllerConfig(), clock=lambda: now[0])
    silence = shell.config.scheduler.agent_silence_s
    session = shell.open_session("agent-1", "mine")
    await shell.agent_joined(
        session, ["echo"], 4, labels={}, running=[], handler_slots={}, traits={}
    )
    assert shell.takeover_refusal("agent-1", "mine") is None  # its own reconnect
    assert shell.takeover_refusal("agent-2", "other") is None  # a free id
    refusal = shell.takeover_refusal("agent-1", "other")
    assert refusal is not None and refusal.startswith(
        "agent 'agent-1' is connected on another stream, which spoke 0 s ago"
    )
    assert shell.takeover_refusal("agent-1", "") is not None  # an old agent without one
    assert shell.may_fetch("agent-1", "mine") and not shell.may_fetch("agent-1", "other")
    now[0] += silence  # a half-dead stream: a restarted process may take the id back
    assert shell.takeover_refusal("agent-1", "other") is None
