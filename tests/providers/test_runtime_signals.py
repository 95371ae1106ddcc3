"""The runtime carries a failed attempt's provider signals to the controller, and caps handlers
per agent as ``--handler-slots`` asks."""

from __future__ import annotations

import asyncio
import pickle

import pytest
from click.testing import CliRunner

from deerflow_agent import (
    Agent,
    AgentConfig,
    Attempt,
    FatalError,
    Handler,
    HandlerError,
    HandlerKind,
    Outcome,
    Runtime,
    TaskContext,
)
from deerflow_agent._stream import Results as _Results
from deerflow_agent._stream import build_message as _build
from deerflow_agent.main import main
from deerflow_common import signals

RATE_LIMITED = {signals.HTTP_STATUS: "429", signals.RETRY_AFTER_S: "1.5"}


async def rate_limited(ctx: TaskContext, payload: bytes) -> bytes:
    raise HandlerError("the provider said 429", retry_after_s=1.5, metadata=RATE_LIMITED)


async def rejected(ctx: TaskContext, payload: bytes) -> bytes:
    raise FatalError("the provider rejected the key", metadata={signals.HTTP_STATUS: "401"})


async def idle(ctx: TaskContext, payload: bytes) -> bytes:
    return b""


RATE_LIMITED_HANDLER = Handler("rate_limited", rate_limited, HandlerKind.IO)
REJECTED_HANDLER = Handler("rejected", rejected, HandlerKind.IO)
IDLE_HANDLER = Handler("gated", idle, HandlerKind.IO)


def _handlers(*handlers: Handler) -> dict[str, Handler]:
    return {h.name: h for h in handlers}


async def _run_one(handler: Handler) -> Outcome:
    outcomes: list[Outcome] = []
    runtime = Runtime(
        {handler.name: handler},
        slots=2,
        cpu_workers=1,
        on_started=lambda key, t: None,
        on_finished=outcomes.append,
    )
    runtime.submit([Attempt(("job", "task", 1), handler.name, b"")])
    await runtime.wait_idle()
    await runtime.aclose()
    assert len(outcomes) == 1
    return outcomes[0]


async def test_a_retryable_failure_carries_its_metadata_into_the_outcome_and_the_result() -> None:
    outcome = await _run_one(RATE_LIMITED_HANDLER)

    assert not outcome.ok
    assert outcome.error is not None and outcome.error.retryable
    assert outcome.error.retry_after_s == 1.5
    assert dict(outcome.metadata or {}) == RATE_LIMITED
    result = _build(_Results([outcome])).results.results[0]
    assert dict(result.metadata) == RATE_LIMITED


async def test_a_fatal_failure_carries_its_metadata_into_the_outcome() -> None:
    outcome = await _run_one(REJECTED_HANDLER)

    assert outcome.error is not None and not outcome.error.retryable
    assert dict(outcome.metadata or {}) == {signals.HTTP_STATUS: "401"}


def test_handler_errors_keep_their_metadata_across_pickling_for_cpu_handlers() -> None:
    retry = pickle.loads(pickle.dumps(HandlerError("m", retry_after_s=2, metadata=RATE_LIMITED)))
    fatal = pickle.loads(pickle.dumps(FatalError("m", metadata={signals.HTTP_STATUS: "422"})))

    assert (retry.retry_after_s, retry.metadata) == (2.0, RATE_LIMITED)
    assert fatal.metadata == {signals.HTTP_STATUS: "422"}


async def test_handler_slots_cap_one_handler_and_leave_the_others_at_the_agent_total() -> None:
    gate = asyncio.Event()

    async def gated(ctx: TaskContext, payload: bytes) -> bytes:
        await gate.wait()
        return b""

    handlers = _handlers(Handler("gated", gated, HandlerKind.IO), RATE_LIMITED_HANDLER)
    started: list[str] = []
    runtime = Runtime(
        handlers,
        slots=8,
        cpu_workers=1,
        handler_slots={"gated": 2},
        on_started=lambda key, t: started.append(key[1]),
        on_finished=lambda o: None,
    )
    runtime.submit([Attempt(("job", f"t{i}", 1), "gated", b"") for i in range(5)])

    assert runtime.slot_caps() == {"gated": 2, "rate_limited": 8}
    assert (runtime.running, runtime.queued) == (2, 3)
    gate.set()
    await runtime.wait_idle()
    await runtime.aclose()
    assert sorted(started) == [f"t{i}" for i in range(5)]


def test_hello_reports_a_handlers_slot_cap_to_the_controller() -> None:
    config = AgentConfig(slots=8, handler_slots={"gated": 3})
    agent = Agent(config, _handlers(IDLE_HANDLER, RATE_LIMITED_HANDLER))

    infos = {h.name: h.slots for h in agent._hello().hello.handlers}

    assert infos == {"gated": 3, "rate_limited": 0}


def test_a_slot_cap_for_a_handler_that_is_not_installed_is_refused() -> None:
    with pytest.raises(ValueError, match="'nope', which is not installed"):
        Runtime(
            _handlers(IDLE_HANDLER),
            slots=4,
            cpu_workers=1,
            handler_slots={"nope": 1},
            on_started=lambda key, t: None,
            on_finished=lambda o: None,
        )


@pytest.mark.parametrize("flag", ["llm", "llm=0", "llm=x", "=3"])
def test_the_agent_refuses_a_handler_slots_flag_that_is_not_name_equals_n(flag: str) -> None:
    result = CliRunner().invoke(main, ["--handler-slots", flag])

    assert result.exit_code == 2
    assert "is not NAME=N" in result.output


def test_the_agent_refuses_handler_slots_for_a_handler_it_does_not_have() -> None:
    result = CliRunner().invoke(main, ["--handler-slots", "no_such_handler=2"])

    assert result.exit_code == 2
    assert "no handler named 'no_such_handler' is installed" in result.output
