"""An idle controller hands a submitted job's assignments to the agents' writers within the
submit (issue #19 item 2), so a submit whose client watches the results lets them start before
its reply is written; a loop turn that already has decisions pending keeps batching them."""

from __future__ import annotations

import asyncio

from deerflow_controller.config import ControllerConfig
from deerflow_controller.core.model import TaskSpec
from deerflow_controller.service.shell import AgentSession, Shell


async def joined_shell() -> tuple[Shell, AgentSession]:
    shell = Shell(ControllerConfig(), clock=lambda: 100.0)
    session = shell.open_session("agent-1")
    await shell.agent_joined(
        session, ["echo"], 4, labels={}, running=[], handler_slots={}, traits={}
    )
    await asyncio.sleep(0)  # the join's own flush (a loop turn, as before)
    session.outbound.clear()
    return shell, session


async def test_an_idle_controller_hands_the_assignments_over_within_the_submit() -> None:
    shell, session = await joined_shell()

    _, flushed = shell.submit_job("j", "", [TaskSpec("a", "echo", b"x")])

    assert flushed is True
    assert [m.WhichOneof("msg") for m in session.outbound] == ["assignments"]
    assert session.wake.is_set()  # the writer runs at the caller's next await


async def test_submits_of_one_busy_loop_turn_share_one_message() -> None:
    shell, session = await joined_shell()
    shell.started(session, [])  # something else was decided this turn: a flush is pending

    _, first = shell.submit_job("j1", "", [TaskSpec("a", "echo", b"x")])
    _, second = shell.submit_job("j2", "", [TaskSpec("b", "echo", b"y")])
    assert (first, second) == (False, False)
    assert not session.outbound
    await asyncio.sleep(0)  # the turn's flush

    assert [m.WhichOneof("msg") for m in session.outbound] == ["assignments"]
    assert len(session.outbound[0].assignments.assignments) == 2
