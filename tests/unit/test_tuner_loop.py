"""The tuner's loop on a real shell and core, with a fake clock: it measures the core's counters,
applies the tuner's answers through ``Shell.tune`` and exports one span per verdict."""

from __future__ import annotations

from dataclasses import replace

from opentelemetry.proto.trace.v1 import trace_pb2

from deerflow_controller.config import ControllerConfig, SchedulerConfig
from deerflow_controller.core.scheduler import AttemptResult
from deerflow_controller.observability.metrics import TaskMetrics
from deerflow_controller.observability.tap import EventTap
from deerflow_controller.service.shell import Shell
from deerflow_controller.service.tuner_loop import WAITING_SAMPLES, TunerLoop
from deerflow_controller.tuning import AGENT_SLOTS, Mode, Tuner, TunerConfig

from .scheduling import spec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _cluster(mode: Mode) -> tuple[Shell, Clock, TunerLoop, list[bytes]]:
    clock = Clock()
    scheduler = replace(SchedulerConfig(), slot_limit=1, prefetch=0, prefetch_cover_s=0.0)
    shell = Shell(ControllerConfig(scheduler=scheduler), clock=clock)
    session = shell.open_session("a1")
    await shell.agent_joined(
        session, ["echo"], 16, labels={}, running=[], handler_slots={}, traits={}
    )
    shell.submit_job("j", "", [spec(f"t{i}") for i in range(5000)])
    spans: list[bytes] = []
    config = TunerConfig(
        mode=mode, interval_s=1.0, cooldown_s=1.0, judge_windows=1, judge_min_completions=10
    )
    loop = TunerLoop(shell, Tuner(config), None, spans.append)
    loop.measure()  # the first window starts now
    return shell, clock, loop, spans


def _second(shell: Shell, clock: Clock) -> None:
    """One simulated second: the agent finishes everything it holds, ten times over."""
    session = shell.sessions["a1"]
    for _ in range(10):
        clock.now += 0.1
        held = list(shell.scheduler.agents["a1"].in_flight)
        shell.results(session, [AttemptResult(k, ok=True) for k in held])


async def test_the_loop_raises_the_slot_limit_and_exports_each_verdict_as_a_span() -> None:
    shell, clock, loop, spans = await _cluster(Mode.ON)
    for _ in range(8):
        _second(shell, clock)
        loop.step()

    assert shell.scheduler.slot_limit >= 8
    assert shell.scheduler.agents["a1"].slots == shell.scheduler.slot_limit
    first = loop.tuner.history[0]
    assert (first.knob, first.old, first.new, first.outcome.value) == (AGENT_SLOTS, 1, 2, "kept")
    span = trace_pb2.ScopeSpans.FromString(spans[0]).spans[0]
    assert span.name == "deerflow.tuner"
    attrs = {a.key: a.value for a in span.attributes}
    assert attrs["deerflow.tuner.knob"].string_value == AGENT_SLOTS
    assert attrs["deerflow.tuner.new"].int_value == 2
    assert [e.name for e in span.events] == ["tuner.change", "tuner.kept"]
    kept = {a.key: a.value for a in span.events[1].attributes}
    assert kept["deerflow.tuner.after"].double_value > first.before
    summary = loop.summary()
    assert summary["mode"] == "on"
    assert summary["knobs"][0] == {
        "name": AGENT_SLOTS,
        "value": shell.scheduler.slot_limit,
        "floor": 1,
        "ceiling": 16,
    }


async def test_in_observe_mode_the_loop_changes_nothing() -> None:
    shell, clock, loop, spans = await _cluster(Mode.OBSERVE)
    for _ in range(8):
        _second(shell, clock)
        loop.step()

    assert shell.scheduler.slot_limit == 1
    assert loop.tuner.history[0].outcome.value == "suggested"
    span = trace_pb2.ScopeSpans.FromString(spans[0]).spans[0]
    assert [e.name for e in span.events] == ["tuner.suggestion"]


async def test_a_window_counts_the_waits_of_tasks_still_queued() -> None:
    # 5,000 tasks queued behind one slot: a window sees ~10 dispatched, and without the queued
    # tasks' waits so far fewer slots would look faster (their waits are told only once they
    # are dispatched).
    shell, clock, loop, _ = await _cluster(Mode.ON)
    metrics = TaskMetrics()
    shell.interceptors.append(EventTap(shell.scheduler, metrics))
    loop = TunerLoop(shell, loop.tuner, metrics)
    loop.measure()
    _second(shell, clock)
    shell.flush()  # what the event loop's next turn does: the tap reads the events
    m = loop.measure()
    assert m is not None
    assert len(m.wait_samples) >= WAITING_SAMPLES
    assert max(m.wait_samples) >= 1.0 - 1e-9  # queued since the submit, a second ago
