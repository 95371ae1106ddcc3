"""The event tap, tracer and metrics driven by the real scheduling core with a fake clock: exact
times in, exact spans and numbers out (no processes, no network)."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

from deerflow_bench import ReceivedSpan, parse_request
from deerflow_common import tracing as otlp
from deerflow_controller.core.model import ErrorKind, TaskError, TaskSpec
from deerflow_controller.core.scheduler import AttemptResult, Outbox, Scheduler
from deerflow_controller.observability.metrics import TaskMetrics
from deerflow_controller.observability.tap import EventTap
from deerflow_controller.observability.tracing import TaskTracer
from deerflow_controller.ratelimit import KeyLimits, LimiterConfig, RateLimiter
from deerflow_controller.service import wire

CLIENT_TRACE = otlp.new_trace_id()
CLIENT_SPAN = otlp.new_span_id()
CONTEXT = {"traceparent": otlp.format_traceparent(CLIENT_TRACE, CLIENT_SPAN, True)}


class RecordingSink:
    """Stands in for SpanSink: keeps what is emitted."""

    def __init__(self) -> None:
        self.sampling = otlp.Sampling(ParentBased(ALWAYS_ON))
        self.emitted: list[bytes] = []
        self.sources: list[Callable[[], None]] = []

    def emit(self, span: bytes) -> None:
        self.emitted.append(span)

    def emit_many(self, spans: list[bytes]) -> None:
        self.emitted.extend(spans)

    def emit_block(self, block: bytes, count: int) -> None:
        self.emitted.append(block)

    def add_source(self, drain: Callable[[], None]) -> None:
        self.sources.append(drain)

    def defer(self, spans: int = 1) -> None:
        """The real sink encodes before its next export; here at once."""
        for drain in self.sources:
            drain()

    def spans(self) -> list[ReceivedSpan]:
        return parse_request(otlp.export_request(b"", b"", self.emitted))


class Harness:
    def __init__(self, limiter: RateLimiter | None = None) -> None:
        self.sched = Scheduler(limiter=limiter, seed=1)
        self.sink = RecordingSink()
        self.metrics = TaskMetrics()
        self.now = 0.0
        """The shell's clock: when flush() sends the assignments."""
        self.tracer = TaskTracer(cast(otlp.SpanSink, self.sink), clock=lambda: self.now)
        self.tap = EventTap(self.sched, self.metrics, self.tracer)
        self.sent: dict[str, dict[str, str]] = {}
        """Task id -> the trace context its last assignment carried."""

    def flush(self, now: float | None = None) -> Outbox:
        """What Shell.flush does (at ``now``): decisions to the tap, assignments built and
        decorated."""
        if now is not None:
            self.now = now
        out = self.sched.take()
        self.tap.on_decisions(out)
        for tasks in out.assignments.values():
            msg = wire.assignment_batch(1, tasks, self.tap.on_assignments(tasks))
            for task, a in zip(tasks, msg.assignments.assignments, strict=True):
                self.sent[task.spec.id] = {"traceparent": a.traceparent, **a.trace_context}
        return out

    def succeed(self, agent: str, out: Outbox, now: float) -> None:
        results = [AttemptResult(t.key, True, b"ok") for t in out.assignments.get(agent, [])]
        self.sched.finished(agent, results, now)


def spec(task_id: str, **kw: object) -> TaskSpec:
    return TaskSpec(task_id, "echo", b"x", trace_context=dict(CONTEXT), **kw)  # type: ignore[arg-type]


def test_schedule_span_covers_the_wait_and_parents_the_agents_span() -> None:
    h = Harness()
    h.sched.submit("j", "job", [spec("a", priority=5), spec("b")], now=10.0)
    h.flush()
    assert h.metrics.queue_by_priority == {5: 1, 0: 1}
    h.sched.agent_joined("agent-1", ["echo"], 4, now=12.5)
    out = h.flush(now=12.5)
    assert h.metrics.queue_by_priority == {5: 0, 0: 0}
    h.succeed("agent-1", out, now=13.0)
    h.flush()

    spans = {s.attributes["deerflow.task.id"]: s for s in h.sink.spans()}
    a = spans["a"]
    assert (a.name, a.trace_id, a.parent_span_id) == (
        "deerflow.schedule",
        CLIENT_TRACE.hex(),
        CLIENT_SPAN.hex(),
    )
    assert (a.start_ns, a.end_ns) == (10_000_000_000, 12_500_000_000)
    assert a.attributes["deerflow.priority"] == 5
    assert a.attributes["deerflow.agent.id"] == "agent-1"
    assert a.attributes["deerflow.job.name"] == "job"
    # The agent gets the schedule span as its parent, in the same trace.
    assert h.sent["a"]["traceparent"] == f"00-{CLIENT_TRACE.hex()}-{a.span_id}-01"
    echo = h.metrics.handlers["echo"]
    assert (echo.wait.count, echo.wait.sum) == (2, 5.0)
    assert (echo.run.count, echo.run.sum) == (2, 1.0)
    assert echo.finished == {"SUCCEEDED": 2}


def test_a_throttled_task_records_when_its_rate_key_held_it() -> None:
    limits = LimiterConfig(
        patterns=(("llm/*", KeyLimits(rpm=60.0, adaptive=False, burst_s=1.0, safety=1.0)),)
    )
    h = Harness(RateLimiter(limits))
    h.sched.agent_joined("agent-1", ["echo"], 4, now=0.0)
    h.sched.submit("j", "", [spec(f"t{i}", rate_keys=("llm/k",)) for i in range(2)], now=1.0)
    out = h.flush(now=1.0)
    h.succeed("agent-1", out, now=1.1)
    h.flush()
    h.sched.tick(2.0)  # a second later the bucket has room for the next request
    out = h.flush(now=2.0)
    spans = {s.attributes["deerflow.task.id"]: s for s in h.sink.spans()}
    first, second = spans["t0"], spans["t1"]
    assert "throttled" not in first.events
    assert first.attributes["deerflow.rate_keys"] == ["llm/k"]
    assert second.events == ("throttled", "released")
    assert (second.start_ns, second.end_ns) == (1_000_000_000, 2_000_000_000)
    # Its wait counts from the hold, not from its release to the ready queue: the tuner's
    # latency objective must see what a rate-keyed task waited (for its key or a slot).
    assert sorted(h.metrics.handlers["echo"].wait_samples) == [0.0, 1.0]


def test_the_waits_of_tasks_still_waiting_are_told_as_they_stand() -> None:
    # The tuner counts them (fewer slots must not look faster while the tasks they hold back
    # are not dispatched yet). No agent: two rate-keyed tasks held THROTTLED since 1.0, three
    # queued since 2.0.
    limits = LimiterConfig(
        patterns=(("llm/*", KeyLimits(rpm=60.0, adaptive=False, burst_s=1.0, safety=1.0)),)
    )
    h = Harness(RateLimiter(limits))
    h.sched.submit("j", "", [spec(f"t{i}", rate_keys=("llm/k",)) for i in range(2)], now=1.0)
    h.flush(now=1.0)
    h.sched.submit("k", "", [spec(f"q{i}") for i in range(3)], now=2.0)
    h.flush(now=2.0)
    assert h.metrics.waiting_ages is not None
    assert sorted(h.metrics.waiting_ages(3.5, 100)) == [1.5, 1.5, 1.5, 2.5, 2.5]
    assert len(h.metrics.waiting_ages(3.5, 2)) == 2


def test_a_retry_starts_a_new_wait_that_says_why() -> None:
    h = Harness()
    h.sched.agent_joined("agent-1", ["echo"], 4, now=0.0)
    h.sched.submit("j", "", [spec("f", max_retries=1)], now=1.0)
    out = h.flush()
    (task,) = out.assignments["agent-1"]
    err = TaskError(ErrorKind.HANDLER_ERROR, "boom", retryable=True)
    h.sched.finished("agent-1", [AttemptResult(task.key, False, error=err)], now=2.0)
    h.flush()
    h.sched.tick(10.0)  # past the backoff
    out = h.flush(now=10.0)
    h.succeed("agent-1", out, now=10.5)
    h.flush()
    first, second = sorted(h.sink.spans(), key=lambda s: s.start_ns)
    assert [first.attributes["deerflow.attempt"], second.attributes["deerflow.attempt"]] == [1, 2]
    assert second.events == ("retry",)
    assert second.start_ns == 2_000_000_000
    echo = h.metrics.handlers["echo"]
    assert echo.retries == {"HANDLER_ERROR": 1}
    assert echo.run.count == 2 and echo.finished == {"SUCCEEDED": 1}
    assert [e["kind"] for e in h.metrics.recent_errors] == ["HANDLER_ERROR"]


def test_pending_tasks_are_counted_until_their_dependency_ends() -> None:
    h = Harness()
    h.sched.submit(
        "j", "", [spec("a"), spec("b", depends_on=("a",)), spec("c", depends_on=("b",))], now=0.0
    )
    h.flush()
    assert h.metrics.pending == 2
    h.sched.cancel("j", ["a"], "test", now=1.0)
    h.flush()
    assert h.metrics.pending == 0
    assert h.metrics.failures_by_kind == {"CANCELLED_BY_CLIENT": 1, "DEPENDENCY_FAILED": 2}
    spans = {s.attributes["deerflow.task.id"]: s for s in h.sink.spans()}
    assert spans["c"].status_code == otlp.STATUS_ERROR
    assert spans["c"].start_ns == 0  # waited on its dependencies since submit
    assert spans["c"].attributes["deerflow.state"] == "FAILED"


def test_tasks_sharing_a_context_without_a_traceparent_each_start_a_trace() -> None:
    h = Harness()
    shared = {"tracestate": "vendor=1"}  # one dict for the job, as the submit path shares it
    h.sched.agent_joined("agent-1", ["echo"], 4, now=0.0)
    h.sched.submit("j", "", [TaskSpec(t, "echo", b"x", trace_context=shared) for t in "ab"], 1.0)
    out = h.flush(now=1.0)
    h.succeed("agent-1", out, now=1.5)
    h.flush()
    spans = {s.attributes["deerflow.task.id"]: s for s in h.sink.spans()}
    assert spans["a"].trace_id != spans["b"].trace_id
    assert spans["a"].parent_span_id == spans["b"].parent_span_id == ""
    for task_id, span in spans.items():
        assert h.sent[task_id] == {
            "traceparent": f"00-{span.trace_id}-{span.span_id}-01",
            "tracestate": "vendor=1",
        }


def test_a_jobs_tasks_share_its_trace_with_a_span_each() -> None:
    h = Harness()
    h.sched.agent_joined("agent-1", ["echo"], 8, now=0.0)
    h.sched.submit("j", "", [spec(f"t{i}") for i in range(5)], now=1.0)
    out = h.flush(now=1.0)
    h.succeed("agent-1", out, now=1.5)
    h.flush()
    spans = h.sink.spans()
    assert len(spans) == 5
    assert {s.trace_id for s in spans} == {CLIENT_TRACE.hex()}
    assert {s.parent_span_id for s in spans} == {CLIENT_SPAN.hex()}
    assert len({s.span_id for s in spans}) == 5
    for s in spans:
        sent = h.sent[s.attributes["deerflow.task.id"]]["traceparent"]
        assert sent == f"00-{s.trace_id}-{s.span_id}-01"
