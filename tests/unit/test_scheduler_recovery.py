"""Scheduler + recovery policy: retries by error class, circuit breakers holding work while a
provider browns out, quarantine of an agent that fails where its peers succeed. Fake clock; each
decision must show up as an event with its reason."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from deerflow_common import signals
from deerflow_controller.core.model import ErrorClass, ErrorKind, TaskError, TaskSpec, TaskState
from deerflow_controller.core.scheduler import AttemptResult, Scheduler
from deerflow_controller.ratelimit import KeyLimits, LimiterConfig, RateLimiter
from deerflow_controller.recovery import BreakerConfig, QuarantineConfig, RecoveryConfig

from .scheduling import JOB, assert_event_log_sound, events_of, key, make


def http_error(task_id: str, attempt: int, status: int) -> AttemptResult:
    error = TaskError(ErrorKind.HANDLER_ERROR, f"HTTP {status} from the provider", True)
    return AttemptResult(
        key(task_id, attempt), False, error=error, metadata={signals.HTTP_STATUS: str(status)}
    )


def ok(task_id: str, attempt: int) -> AttemptResult:
    return AttemptResult(key(task_id, attempt), True, b"ok")


def dispatched(sched: Scheduler) -> dict[str, list[str]]:
    return {a: [t.id for t in ts] for a, ts in sched.take().assignments.items()}


def test_a_fatal_provider_error_is_not_retried_and_says_so() -> None:
    sched = make(recovery=RecoveryConfig())
    sched.agent_joined("a", ["search"], 1, 0.0)
    job = sched.submit(JOB, "j", [TaskSpec("t", "search", max_retries=5)], 0.0)
    sched.finished("a", [http_error("t", 1, 401)], 1.0)
    task = job.tasks["t"]
    assert task.state == TaskState.FAILED
    assert task.error is not None and task.error.error_class == ErrorClass.FATAL
    assert "not retried" in task.error.message
    assert_event_log_sound(job)


def test_a_5xx_retry_carries_its_reason_in_the_event() -> None:
    sched = make(recovery=RecoveryConfig())
    sched.agent_joined("a", ["search"], 1, 0.0)
    job = sched.submit(JOB, "j", [TaskSpec("t", "search", max_retries=2)], 0.0)
    sched.finished("a", [http_error("t", 1, 503)], 1.0)
    retry = events_of(job, "t")[-1]
    assert retry.state == TaskState.RETRYING
    assert retry.detail.startswith("transient HANDLER_ERROR (HTTP 503); retry 1 of 2 in ")


BREAKER = BreakerConfig(min_failures=4, min_tasks=3, failure_ratio=0.5, window_s=30.0, open_s=5.0)


def brownout(sched: Scheduler, n: int) -> Any:
    """``n`` search tasks on one agent; every first attempt answers 503."""
    sched.agent_joined("a", ["search"], n, 0.0)
    specs = [TaskSpec(f"t{i}", "search", max_retries=5) for i in range(n)]
    job = sched.submit(JOB, "j", specs, 0.0)
    sched.take()
    sched.finished("a", [http_error(f"t{i}", 1, 503) for i in range(n)], 1.0)
    return job


def test_failures_across_tasks_open_the_circuit_and_hold_the_work_throttled() -> None:
    sched = make(recovery=RecoveryConfig(breaker=BREAKER))
    job = brownout(sched, 6)
    out = sched.take()
    assert sched.counters.circuit_trips >= 1
    assert any("opened" in n or "open" in n for n in out.notices)
    # Retries come due while the circuit is open: they wait THROTTLED on it, not dispatched.
    sched.tick(3.0)
    assert dispatched(sched) == {}
    held = [t for t in job.tasks.values() if t.state == TaskState.THROTTLED]
    assert held, [t.state for t in job.tasks.values()]
    detail = events_of(job, held[0].id)[-1].detail
    assert detail.startswith("circuit ") and "is open" in detail
    assert_event_log_sound(job)


def test_a_half_open_circuit_lets_one_probe_through_and_closes_on_its_success() -> None:
    sched = make(recovery=RecoveryConfig(breaker=BREAKER))
    job = brownout(sched, 6)
    sched.take()
    sched.tick(3.0)
    sched.take()
    # After the cool-down exactly one probe goes out.
    sched.tick(6.0)
    probes = dispatched(sched).get("a", [])
    assert len(probes) == 1
    probe = job.tasks[probes[0]]
    sched.finished("a", [ok(probe.id, probe.attempt)], 6.5)
    # The probe's success closes the circuit: everything held is dispatched.
    rest = dispatched(sched).get("a", [])
    assert sorted(rest) == sorted(t.id for t in job.tasks.values() if t.id != probe.id)
    for t in rest:
        sched.finished("a", [ok(t, job.tasks[t].attempt)], 7.0)
    assert all(t.state == TaskState.SUCCEEDED for t in job.tasks.values())
    assert_event_log_sound(job)


def test_many_failures_of_one_task_do_not_open_a_circuit() -> None:
    sched = make(recovery=RecoveryConfig(breaker=BREAKER))
    sched.agent_joined("a", ["search"], 1, 0.0)
    job = sched.submit(JOB, "j", [TaskSpec("t", "search", max_retries=10)], 0.0)
    now = 0.0
    for attempt in range(1, 7):
        sched.take()
        now += 100.0
        sched.tick(now)
        sched.finished("a", [http_error("t", attempt, 503)], now + 0.5)
    assert sched.counters.circuit_trips == 0
    assert_event_log_sound(job)


QUARANTINE = QuarantineConfig(min_failures=3, min_peer_attempts=3, cooldown_s=1e6)


def test_an_agent_failing_where_its_peer_succeeds_is_quarantined_for_that_handler() -> None:
    sched = make(
        recovery=RecoveryConfig(quarantine=QUARANTINE, breaker=replace(BREAKER, min_failures=1000))
    )
    sched.agent_joined("bad", ["echo"], 4, 0.0)
    sched.agent_joined("good", ["echo"], 4, 0.0)
    specs = [TaskSpec(f"t{i}", "echo", max_retries=5) for i in range(16)]
    job = sched.submit(JOB, "j", specs, 0.0)
    now = 0.0
    for _ in range(20):
        out = sched.take()
        if not out.assignments:
            now += 10.0
            sched.tick(now)
            out = sched.take()
            if not out.assignments:
                break
        now += 0.1
        for agent, tasks in out.assignments.items():
            results = []
            for t in tasks:
                if agent == "bad":
                    error = TaskError(ErrorKind.HANDLER_ERROR, "broken install", True)
                    results.append(AttemptResult(t.key, False, error=error))
                else:
                    results.append(AttemptResult(t.key, True, b"ok"))
            sched.finished(agent, results, now)
    assert sched.counters.quarantines == 1
    assert "echo" in sched.quarantine.quarantined_handlers("bad", now)
    assert all(t.state == TaskState.SUCCEEDED for t in job.tasks.values())
    # Once quarantined, "bad" gets no more echo tasks.
    bad_after = [
        e
        for e in job.events
        if e.state == TaskState.DISPATCHED and e.agent_id == "bad" and e.time > now - 0.05
    ]
    assert bad_after == []
    assert_event_log_sound(job)


def test_work_taken_back_from_a_quarantined_agent_is_not_charged_its_rate_budget_again() -> None:
    key_ = "search/key"
    sched = make(
        recovery=RecoveryConfig(quarantine=QUARANTINE, breaker=replace(BREAKER, min_failures=1000)),
        limiter=RateLimiter(LimiterConfig((), KeyLimits(concurrency=100, adaptive=False))),
        prefetch=4,
    )
    sched.agent_joined("bad", ["echo"], 2, 0.0)
    sched.agent_joined("good", ["echo"], 2, 0.0)
    specs = [TaskSpec(f"t{i}", "echo", max_retries=5, rate_keys=(key_,)) for i in range(16)]
    job = sched.submit(JOB, "j", specs, 0.0)
    # What each agent was given and has not run yet, in order (it runs two a turn).
    waiting: dict[str, list[tuple[str, str, int]]] = {"bad": [], "good": []}
    now, sent = 0.0, 0
    while not all(t.terminal for t in job.tasks.values()):
        out = sched.take()
        for agent, keys in out.cancels.items():
            waiting[agent] = [k for k in waiting[agent] if k not in keys]
        for agent, tasks in out.assignments.items():
            waiting[agent] += [t.key for t in tasks]
        now += 0.1
        if not any(waiting.values()):
            now += 10.0
            sched.tick(now)
            continue
        for agent, keys in waiting.items():
            running, waiting[agent] = keys[:2], keys[2:]
            sched.started(agent, running, now)
            results = []
            for k in running:
                if agent == "bad":
                    error = TaskError(ErrorKind.HANDLER_ERROR, "broken install", True)
                    results.append(AttemptResult(k, False, error=error))
                else:
                    results.append(AttemptResult(k, True, b"ok"))
            sent += len(results)
            sched.finished(agent, results, now)
    assert sched.counters.quarantines == 1
    assert all(t.state == TaskState.SUCCEEDED for t in job.tasks.values())
    gate = sched.limiter.gates[key_]
    # Every admission is a request sent: the attempts taken back unstarted kept theirs.
    assert (gate.stats.admitted, gate.in_flight) == (sent, 0)
    assert_event_log_sound(job)
