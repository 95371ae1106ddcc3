"""A task becomes ready once per wait, and every count of ready work gives back what it took.

Issue #13: a job whose root the result cache answered at submit made its dependent ready twice
(two QUEUED events); the ready queue counted it twice and never gave the count back, which
turned stats phantom, stopped stealing and preloading, and, once the leaks reached the agents'
credit, left every rate-keyed task THROTTLED for ever on an idle cluster. Fake clock.
"""

from __future__ import annotations

from dataclasses import replace

from deerflow_controller.cache import ResultCache
from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.model import ErrorKind, HandlerTraits, TaskError, TaskSpec, TaskState
from deerflow_controller.core.scheduler import AttemptResult, RestoredJob, Scheduler
from deerflow_controller.ratelimit import KeyLimits, LimiterConfig, RateLimiter
from deerflow_controller.recovery import RecoveryConfig

from .scheduling import assert_event_log_sound, key, make, trail

TRAITS = {"search": HandlerTraits(cacheable=True), "llm": HandlerTraits()}
Q = b'{"query": "EV battery supply chains"}'


def warm(slots: int) -> Scheduler:
    """A scheduler with a result cache and one agent of ``slots`` slots and no prefetch, whose
    cache already holds the answer to ``Q``."""
    sched = make(seed=1, cache=ResultCache())
    sched.agent_joined("a", ["search", "llm"], slots, 0.0, traits=TRAITS)
    sched.submit("warm", "", [TaskSpec("t", "search", payload=Q)], 0.0)
    sched.take()
    sched.finished("a", [AttemptResult(key("t", 1, "warm"), True, b"cached", run_s=1.0)], 1.0)
    return sched


def cached_root_with_dependent(dependent: TaskSpec) -> list[TaskSpec]:
    return [TaskSpec("root", "search", payload=Q), dependent]


def test_a_root_answered_from_the_cache_at_submit_makes_its_dependent_ready_once() -> None:
    sched = warm(slots=8)
    job = sched.submit(
        "j", "", cached_root_with_dependent(TaskSpec("d", "llm", depends_on=("root",))), 2.0
    )
    assert job.tasks["root"].state == TaskState.SUCCEEDED
    assert trail(job, "d") == [TaskState.PENDING, TaskState.QUEUED, TaskState.DISPATCHED]
    assert [t.id for t in sched.take().assignments["a"]] == ["d"]
    assert sched.queued() == 0
    assert_event_log_sound(job)


def test_a_rate_keyed_dependent_of_a_cached_root_waits_in_its_gate_once() -> None:
    sched = warm(slots=8)
    dependent = TaskSpec("d", "llm", depends_on=("root",), rate_keys=("llm/k",))
    job = sched.submit("j", "", cached_root_with_dependent(dependent), 2.0)
    assert trail(job, "d") == [TaskState.PENDING, TaskState.QUEUED, TaskState.DISPATCHED]
    assert sched.limiter.waiting == 0
    assert sched.limiter.gates["llm/k"].in_flight == 1
    sched.finished("a", [AttemptResult(key("d", 1, "j"), True, b"ok", run_s=1.0)], 3.0)
    assert sched.limiter.gates["llm/k"].in_flight == 0
    assert_event_log_sound(job)


def test_after_a_cached_root_a_one_slot_cluster_still_runs_rate_keyed_tasks() -> None:
    sched = warm(slots=1)
    job = sched.submit(
        "j", "", cached_root_with_dependent(TaskSpec("d", "llm", depends_on=("root",))), 2.0
    )
    assert [t.id for t in sched.take().assignments["a"]] == ["d"]
    sched.finished("a", [AttemptResult(key("d", 1, "j"), True, b"ok", run_s=1.0)], 3.0)
    assert job.done and sched.queued() == 0
    later = sched.submit("later", "", [TaskSpec("q", "llm", rate_keys=("llm/k",))], 4.0)
    now = 4.0
    for _ in range(20):  # an idle cluster: only time passes, as the shell would tick it
        when = sched.next_timer()
        if when is None or later.tasks["q"].state != TaskState.THROTTLED:
            break
        now = max(now, when)
        sched.heartbeat("a", 0, 0.0, 0.0, now)
        sched.tick(now)
    assert later.tasks["q"].state == TaskState.DISPATCHED
    assert [t.id for t in sched.take().assignments["a"]] == ["q"]


def test_an_agent_that_comes_back_takes_its_attempt_out_of_the_rate_keys_gate() -> None:
    config = SchedulerConfig(prefetch=0, prefetch_fraction=0.0, agent_silence_s=1e9)
    sched = Scheduler(config, seed=1)
    sched.agent_joined("a", ["llm"], 1, 0.0)
    job = sched.submit("j", "", [TaskSpec("t", "llm", rate_keys=("llm/k",))], 0.0)
    assert [t.id for t in sched.take().assignments["a"]] == ["t"]
    sched.agent_left("a", 1.0)  # lost: the retry waits THROTTLED, no agent has room
    task = job.tasks["t"]
    assert task.state == TaskState.THROTTLED and sched.limiter.waiting == 1
    sched.agent_joined("a", ["llm"], 1, 1.5, running=[key("t", 1, "j")])
    assert trail(job, "t")[-1] == TaskState.RUNNING
    assert sched.limiter.waiting == 0
    sched.finished("a", [AttemptResult(key("t", 1, "j"), True, b"ok", run_s=1.0)], 2.0)
    assert job.done and sched.limiter.waiting == 0
    assert_event_log_sound(job)


def test_a_task_that_waits_in_its_gate_again_keeps_its_place_and_is_taken_once() -> None:
    one_per_second = KeyLimits(rpm=60, safety=1.0, burst_s=1.0, adaptive=False)
    config = SchedulerConfig(prefetch=0, prefetch_fraction=0.0, agent_silence_s=1e9)
    limiter = RateLimiter(LimiterConfig((("llm/*", one_per_second),)))
    sched = Scheduler(config, limiter=limiter, seed=1)
    sched.agent_joined("a", ["llm"], 1, 0.0)
    job = sched.submit("j", "", [TaskSpec("t", "llm", rate_keys=("llm/k",))], 0.0)
    assert [t.id for t in sched.take().assignments["a"]] == ["t"]
    sched.submit("ju", "", [TaskSpec("u", "llm", rate_keys=("llm/k",))], 0.05)
    # t waits in the gate again, behind u, until its agent comes back still running it.
    sched.agent_left("a", 0.1)
    sched.agent_joined("a", ["llm"], 1, 0.3, running=[key("t", 1, "j")])
    assert job.tasks["t"].state == TaskState.RUNNING
    sched.submit("jw", "", [TaskSpec("w", "llm", rate_keys=("llm/k",))], 0.35)
    error = TaskError(ErrorKind.HANDLER_ERROR, "503 unavailable", True)
    sched.finished("a", [AttemptResult(key("t", 1, "j"), False, error=error)], 0.4)
    order: list[str] = []
    while True:  # t waits again from its retry and keeps its first place (issue #13): t, u, w
        for task in sched.take().assignments.get("a", []):
            order.append(task.id)
            now = task.job.events[-1].time
            sched.finished("a", [AttemptResult(task.key, True, b"ok", run_s=0.1)], now)
        if len(order) == 3:
            break
        when = sched.next_timer()
        assert when is not None and when < 10.0
        sched.tick(when)
    assert order == ["t", "u", "w"]  # each once: no old entry of t's is taken as well
    assert sched.limiter.waiting == 0


def test_a_task_parked_on_an_open_circuit_gives_its_room_to_a_throttled_task_at_once() -> None:
    recovery = RecoveryConfig()
    breaker = replace(recovery.breaker, min_failures=2, min_tasks=2)
    config = SchedulerConfig(
        prefetch=0,
        prefetch_fraction=0.0,
        agent_silence_s=1e9,
        recovery=replace(recovery, breaker=breaker),
    )
    sched = Scheduler(config, seed=1)
    sched.agent_joined("a", ["llm", "sleep"], 1, 0.0)
    error = TaskError(ErrorKind.HANDLER_ERROR, "503 unavailable", True)
    for i in range(2):  # two tasks fail on the provider: the llm handler's circuit opens
        sched.submit(f"f{i}", "", [TaskSpec(f"f{i}", "llm", max_retries=0)], float(i))
        sched.take()
        sched.finished("a", [AttemptResult(key(f"f{i}", 1, f"f{i}"), False, error=error)], i + 0.5)
    assert sched.counters.circuit_trips == 1
    job = sched.submit(
        "j",
        "",
        [TaskSpec("x", "llm", rate_keys=("k1",)), TaskSpec("y", "sleep", rate_keys=("k2",))],
        2.0,
    )
    assert job.tasks["x"].parked_on == "handler:llm"
    assert [t.id for t in sched.take().assignments.get("a", [])] == ["y"]
    assert sched.limiter.waiting == 0


def test_a_restored_task_split_on_its_retry_outlives_the_deadline_of_its_whole_attempt() -> None:
    """After a failover, a task adopted running whole has no split decided yet; when it is split
    on its retry, the deadline timer of the adopted attempt (same attempt number) must not time
    out the parent, which runs on no agent."""
    traits = {"hash": HandlerTraits(kind="cpu", items_field="items", default_duration_s=1.0)}
    config = SchedulerConfig(prefetch=0, prefetch_fraction=0.0, agent_silence_s=1e9)
    sched = Scheduler(config, seed=1)
    items = b'{"items": [0, 1, 2, 3, 4, 5, 6, 7]}'
    job = sched.restore_job(RestoredJob("j", "", [TaskSpec("t", "hash", payload=items)], {}), 0.0)
    sched.adopt_restored([key("t", 1, "j")], 0.0)
    sched.agent_joined("a", ["hash"], 4, 0.0, running=[key("t", 1, "j")], traits=traits)
    sched.release_restored(0.0)
    error = TaskError(ErrorKind.HANDLER_ERROR, "503 unavailable", True)
    sched.finished("a", [AttemptResult(key("t", 1, "j"), False, error=error)], 1.0)
    while sched.counters.split_tasks == 0:  # the retry's delay ends: now it is split
        when = sched.next_timer()
        assert when is not None and when < 10.0
        sched.tick(when)
    outs = [sched.take()]
    for now in (300.0, 306.0, 310.0):  # past the adopted attempt's deadline (0 + 300 + 5 s)
        sched.heartbeat("a", 4, 0.0, 0.0, now)
        sched.tick(now)
        outs.append(sched.take())
    assert all("" not in out.cancels for out in outs)
    assert TaskState.RETRYING not in trail(job, "t")[-1:]
    assert [
        e.state for e in job.events if e.error is not None and e.error.kind == ErrorKind.TIMEOUT
    ] == []
