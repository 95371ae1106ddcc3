"""Progress: ctx.progress reaches the stream rate-limited per attempt, coalesced per loop turn,
and never after the attempt's result."""

from __future__ import annotations

import asyncio

from deerflow_agent import Agent, AgentConfig, Attempt, Handler, Outcome, Runtime, TaskContext
from deerflow_agent._progress import ProgressThrottle
from deerflow_agent._stream import Progress as _Progress
from deerflow_agent._stream import Stream as _Stream
from deerflow_agent._stream import build_message as _build
from deerflow_common.errors import AttemptKey
from deerflow_protos import agent_pb2

KEY: AttemptKey = ("job", "task", 1)
Report = tuple[AttemptKey, float, str]


# ------------------------------------------------------------------------- the throttle (pure)


def test_the_first_report_of_an_attempt_is_sent_at_once() -> None:
    throttle = ProgressThrottle(0.5)

    assert throttle.offer(KEY, (0.1, "a"), now=10.0) == (True, 0.0)


def test_reports_within_the_interval_are_held_and_the_latest_is_sent_at_its_end() -> None:
    throttle = ProgressThrottle(0.5)
    throttle.offer(KEY, (0.1, "a"), now=10.0)

    first_held = throttle.offer(KEY, (0.2, "b"), now=10.1)
    second_held = throttle.offer(KEY, (0.3, "c"), now=10.2)

    assert first_held == (False, 10.5)  # arrange one wake-up at the interval's end
    assert second_held == (False, 0.0)  # already arranged
    assert throttle.take(KEY, now=10.5) == (0.3, "c")
    assert throttle.take(KEY, now=10.5) is None


def test_a_report_after_the_interval_is_sent_at_once_and_replaces_a_held_one() -> None:
    throttle = ProgressThrottle(0.5)
    throttle.offer(KEY, (0.1, "a"), now=10.0)
    throttle.offer(KEY, (0.2, "b"), now=10.2)

    assert throttle.offer(KEY, (0.4, "d"), now=10.6) == (True, 0.0)
    assert throttle.take(KEY, now=10.6) is None


def test_attempts_are_throttled_independently_and_forgotten_when_they_end() -> None:
    other: AttemptKey = ("job", "other", 1)
    throttle = ProgressThrottle(0.5)
    throttle.offer(KEY, (0.1, "a"), now=10.0)
    throttle.offer(KEY, (0.2, "b"), now=10.1)

    assert throttle.offer(other, (0.5, ""), now=10.1) == (True, 0.0)
    throttle.forget(KEY)
    assert throttle.take(KEY, now=10.5) is None
    assert throttle.offer(KEY, (0.9, "again"), now=10.2) == (True, 0.0)


# ------------------------------------------------------------------------- the runtime


def _runtime(
    handler: Handler, reports: list[Report], outcomes: list[Outcome], interval_s: float
) -> Runtime:
    return Runtime(
        {handler.name: handler},
        slots=4,
        cpu_workers=1,
        on_started=lambda key, t: None,
        on_finished=outcomes.append,
        on_progress=lambda key, f, m: reports.append((key, f, m)),
        progress_interval_s=interval_s,
    )


async def test_a_handlers_progress_reaches_on_progress_clamped_and_in_order() -> None:
    async def steps(ctx: TaskContext, payload: bytes) -> bytes:
        ctx.progress(0.25, "a quarter")
        ctx.progress(7.0)  # clamped
        ctx.progress(None, "no idea how far")
        return b"done"

    reports: list[Report] = []
    outcomes: list[Outcome] = []
    runtime = _runtime(Handler("steps", steps), reports, outcomes, interval_s=0.0)
    runtime.submit([Attempt(KEY, "steps", b"")])
    await runtime.wait_idle()
    await runtime.aclose()

    assert reports == [(KEY, 0.25, "a quarter"), (KEY, 1.0, ""), (KEY, -1.0, "no idea how far")]
    assert outcomes[0].ok


async def test_a_burst_of_progress_sends_the_first_and_drops_what_is_held_at_the_result() -> None:
    async def chatty(ctx: TaskContext, payload: bytes) -> bytes:
        for i in range(100):
            ctx.progress(i / 100)
        return b"done"

    reports: list[Report] = []
    outcomes: list[Outcome] = []
    runtime = _runtime(Handler("chatty", chatty), reports, outcomes, interval_s=3600.0)
    runtime.submit([Attempt(KEY, "chatty", b"")])
    await runtime.wait_idle()
    await runtime.aclose()

    assert reports == [(KEY, 0.0, "")]  # the held 0.99 is superseded by the result
    assert outcomes[0].ok


async def test_a_held_report_is_sent_when_the_interval_passes_while_the_attempt_runs() -> None:
    released = asyncio.Event()
    reports: list[Report] = []

    async def slow(ctx: TaskContext, payload: bytes) -> bytes:
        ctx.progress(0.1, "first")
        ctx.progress(0.2, "held")
        await released.wait()
        return b"done"

    def on_progress(key: AttemptKey, fraction: float, message: str) -> None:
        reports.append((key, fraction, message))
        if message == "held":
            released.set()

    runtime = Runtime(
        {"slow": Handler("slow", slow)},
        slots=1,
        cpu_workers=1,
        on_started=lambda key, t: None,
        on_finished=lambda o: None,
        on_progress=on_progress,
        progress_interval_s=0.01,
    )
    runtime.submit([Attempt(KEY, "slow", b"")])
    await runtime.wait_idle()
    await runtime.aclose()

    assert reports == [(KEY, 0.1, "first"), (KEY, 0.2, "held")]


async def test_progress_without_an_on_progress_callback_is_a_harmless_no_op() -> None:
    async def reporting(ctx: TaskContext, payload: bytes) -> bytes:
        ctx.progress(0.5, "half")
        return b"ok"

    outcomes: list[Outcome] = []
    runtime = Runtime(
        {"reporting": Handler("reporting", reporting)},
        slots=1,
        cpu_workers=1,
        on_started=lambda key, t: None,
        on_finished=outcomes.append,
    )
    runtime.submit([Attempt(KEY, "reporting", b"")])
    await runtime.wait_idle()
    await runtime.aclose()

    assert outcomes[0].ok and outcomes[0].output == b"ok"


# ------------------------------------------------------------------------- the stream


def test_progress_reports_become_one_progress_batch_on_the_wire() -> None:
    other: AttemptKey = ("job", "other", 2)

    msg = _build(_Progress([(KEY, 0.5, "half"), (other, -1.0, "")]))

    assert msg.WhichOneof("msg") == "progress"
    assert list(msg.progress.progress) == [
        agent_pb2.Progress(
            ref=agent_pb2.AttemptRef(job_id="job", task_id="task", attempt=1),
            fraction=0.5,
            message="half",
        ),
        agent_pb2.Progress(
            ref=agent_pb2.AttemptRef(job_id="job", task_id="other", attempt=2), fraction=-1.0
        ),
    ]


async def _echo(ctx: TaskContext, payload: bytes) -> bytes:
    return payload


def _connected_agent() -> tuple[Agent, _Stream]:
    """An agent with a stream whose outbox is inspected instead of written (no writer runs)."""
    agent = Agent(AgentConfig(slots=2), {"echo": Handler("echo", _echo)})
    stream = _Stream(None, "test", agent_pb2.Welcome(epoch=1))
    agent._stream = stream
    return agent, stream


async def test_reports_of_one_loop_turn_are_coalesced_to_the_latest_per_attempt() -> None:
    other: AttemptKey = ("job", "other", 1)
    agent, stream = _connected_agent()

    agent._on_progress(KEY, 0.1, "a")
    agent._on_progress(other, 0.5, "x")
    agent._on_progress(KEY, 0.2, "b")
    agent._flush()

    sent = [e for e in stream.outbox if isinstance(e, _Progress)]
    assert [e.items for e in sent] == [[(KEY, 0.2, "b"), (other, 0.5, "x")]]


async def test_progress_of_an_attempt_whose_result_leaves_in_the_same_flush_is_dropped() -> None:
    agent, stream = _connected_agent()

    agent._on_progress(KEY, 0.9, "almost")
    agent._on_finished(Outcome(KEY, "echo", True, b"", None, 1.0, 2.0))
    agent._flush()

    assert not [e for e in stream.outbox if isinstance(e, _Progress)]


async def test_progress_while_disconnected_is_dropped() -> None:
    agent = Agent(AgentConfig(slots=2), {"echo": Handler("echo", _echo)})

    agent._on_progress(KEY, 0.5, "")

    assert agent._progress == {}
