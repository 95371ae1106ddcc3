"""Scheduler + result cache: a repeated request is answered from the cache, identical requests
submitted while one runs wait for it and share its result under their own ids, a failed leader
releases its followers to run, and handlers that are not cacheable are never cached. Fake clock."""

from __future__ import annotations

from deerflow_controller.cache import ResultCache
from deerflow_controller.core.model import (
    CachePolicy,
    ErrorKind,
    HandlerTraits,
    TaskError,
    TaskSpec,
    TaskState,
)
from deerflow_controller.core.scheduler import AttemptResult, Scheduler

from .scheduling import assert_event_log_sound, events_of, key, make

TRAITS = {
    "search": HandlerTraits(cacheable=True),
    "llm": HandlerTraits(cacheable=True, nondeterministic=True),
    "sleep": HandlerTraits(),
}
Q = b'{"query": "EV battery supply chains"}'


def with_cache() -> Scheduler:
    """The shared scheduler with a result cache and agent "a" (8 slots) running every handler."""
    sched = make(seed=1, cache=ResultCache())
    sched.agent_joined("a", ["search", "llm", "sleep"], 8, 0.0, traits=TRAITS)
    return sched


def run(sched: Scheduler, job_id: str, task_id: str, now: float, output: bytes = b"answer") -> None:
    sched.finished("a", [AttemptResult(key(task_id, 1, job_id), True, output, run_s=1.0)], now)


def test_a_repeated_request_is_answered_from_the_cache() -> None:
    sched = with_cache()
    sched.submit("j1", "", [TaskSpec("t", "search", payload=Q)], 0.0)
    assert [t.id for t in sched.take().assignments["a"]] == ["t"]
    run(sched, "j1", "t", 1.0)
    job = sched.submit("j2", "", [TaskSpec("again", "search", payload=Q)], 5.0)
    assert sched.take().assignments == {}
    task = job.tasks["again"]
    assert task.state == TaskState.SUCCEEDED and task.output == b"answer"
    done = events_of(job, "again")[-1]
    assert done.cache_layer == "exact" and done.detail.startswith("cache hit (exact")
    assert_event_log_sound(job)


def test_identical_requests_in_flight_share_one_run() -> None:
    sched = with_cache()
    j1 = sched.submit("j1", "", [TaskSpec("a1", "search", payload=Q)], 0.0)
    j2 = sched.submit("j2", "", [TaskSpec("b1", "search", payload=Q)], 0.1)
    assigned = [t.id for ts in sched.take().assignments.values() for t in ts]
    assert assigned == ["a1"]  # b1 waits for a1
    assert "waiting for the identical task 'a1'" in events_of(j2, "b1")[-1].detail
    run(sched, "j1", "a1", 1.0, b"shared")
    follower = j2.tasks["b1"]
    assert follower.state == TaskState.SUCCEEDED and follower.output == b"shared"
    assert events_of(j2, "b1")[-1].cache_layer == "inflight"
    assert_event_log_sound(j1)
    assert_event_log_sound(j2)


def test_a_failed_leader_releases_its_followers_to_run() -> None:
    sched = with_cache()
    sched.submit("j1", "", [TaskSpec("a1", "search", payload=Q, max_retries=0)], 0.0)
    j2 = sched.submit("j2", "", [TaskSpec("b1", "search", payload=Q)], 0.1)
    sched.take()
    error = TaskError(ErrorKind.HANDLER_ERROR, "provider said no", False)
    sched.finished("a", [AttemptResult(key("a1", 1, "j1"), False, error=error)], 1.0)
    assert [t.id for t in sched.take().assignments["a"]] == ["b1"]
    run(sched, "j2", "b1", 2.0, b"second try")
    assert j2.tasks["b1"].output == b"second try"
    assert_event_log_sound(j2)


def test_a_cancelled_follower_leaves_the_leader_alone() -> None:
    sched = with_cache()
    j1 = sched.submit("j1", "", [TaskSpec("a1", "search", payload=Q)], 0.0)
    sched.submit("j2", "", [TaskSpec("b1", "search", payload=Q)], 0.1)
    sched.take()
    assert sched.cancel("j2", None, "no longer needed", 0.5) == 1
    run(sched, "j1", "a1", 1.0)
    assert j1.tasks["a1"].state == TaskState.SUCCEEDED


def test_handlers_not_cacheable_or_nondeterministic_always_run() -> None:
    sched = with_cache()
    for i, handler in enumerate(["sleep", "llm"]):
        for j in range(2):
            job_id = f"{handler}{j}"
            sched.submit(job_id, "", [TaskSpec("t", handler, payload=Q)], float(i * 10 + j))
            assert [t.id for t in sched.take().assignments["a"]] == ["t"]
            run(sched, job_id, "t", float(i * 10 + j) + 0.5)


def test_a_task_may_ask_for_the_cache_even_on_a_nondeterministic_handler() -> None:
    sched = with_cache()
    sched.submit("j1", "", [TaskSpec("t", "llm", payload=Q, cache=CachePolicy.ON)], 0.0)
    sched.take()
    run(sched, "j1", "t", 1.0)
    job = sched.submit("j2", "", [TaskSpec("t", "llm", payload=Q, cache=CachePolicy.ON)], 2.0)
    assert job.tasks["t"].state == TaskState.SUCCEEDED


def test_refresh_runs_the_task_and_overwrites_the_entry() -> None:
    sched = with_cache()
    sched.submit("j1", "", [TaskSpec("t", "search", payload=Q)], 0.0)
    sched.take()
    run(sched, "j1", "t", 1.0, b"old")
    sched.submit("j2", "", [TaskSpec("t", "search", payload=Q, cache=CachePolicy.REFRESH)], 2.0)
    assert [t.id for t in sched.take().assignments["a"]] == ["t"]
    run(sched, "j2", "t", 3.0, b"new")
    job = sched.submit("j3", "", [TaskSpec("t", "search", payload=Q)], 4.0)
    assert job.tasks["t"].output == b"new"


def test_idle_slots_preload_the_likely_next_request_at_the_lowest_priority() -> None:
    sched = with_cache()
    q1 = b'{"query": "EV battery supply chains"}'
    q2 = b'{"query": "EV battery recycling capacity"}'
    now = 0.0
    # Three research jobs ask q1, then q2: the preloader learns that q2 follows q1.
    for j in range(3):
        specs = [
            TaskSpec("q0", "search", payload=q1),
            TaskSpec("q1", "search", payload=q2, depends_on=("q0",)),
        ]
        sched.submit(f"train{j}", "", specs, now)
        for _ in range(2):
            for agent, tasks in sched.take().assignments.items():
                for t in tasks:
                    answer = b"answer:" + t.spec.payload
                    sched.finished(agent, [AttemptResult(t.key, True, answer, run_s=1.0)], now)
        now += 100_000.0  # older answers have expired: each job asks the provider again
    sched.submit("next", "", [TaskSpec("q0", "search", payload=q1)], now)
    out = sched.take()
    sent = [t for ts in out.assignments.values() for t in ts]
    # The real q1 goes out, and beside it, on an idle slot, a speculative q2.
    assert [t.spec.payload for t in sent if not t.speculative] == [q1]
    speculative = [t for t in sent if t.speculative]
    assert [t.spec.payload for t in speculative] == [q2], out.notices
    assert speculative[0].spec.priority < -1_000_000
    assert any("preloading" in n for n in out.notices)
    for t in sent:
        out_bytes = b"answer:" + t.spec.payload
        sched.finished("a", [AttemptResult(t.key, True, out_bytes, run_s=1.0)], now)
    job = sched.submit("asks", "", [TaskSpec("q", "search", payload=q2)], now + 1.0)
    assert job.tasks["q"].output == b"answer:" + q2
    assert events_of(job, "q")[-1].cache_layer == "preload"


def test_one_tenants_answer_is_never_served_to_another_tenant() -> None:
    """Issue #17: the cache is keyed per tenant. The same request from tenant b neither hits a's
    cached answer nor waits on a's identical request in flight; a's own repeat still hits."""
    sched = with_cache()
    sched.submit("j1", "", [TaskSpec("t", "search", payload=Q, tenant="a")], 0.0)
    sched.take()
    j2 = sched.submit("j2", "", [TaskSpec("b1", "search", payload=Q, tenant="b")], 0.5)
    assert [t.id for t in sched.take().assignments["a"]] == ["b1"]  # not a follower of t
    run(sched, "j1", "t", 1.0, b"a's answer")
    assert j2.tasks["b1"].state != TaskState.SUCCEEDED
    j3 = sched.submit("j3", "", [TaskSpec("b2", "search", payload=Q, tenant="b")], 2.0)
    assert j3.tasks["b2"].state != TaskState.SUCCEEDED  # b1 is b's flight: b2 follows it
    run(sched, "j2", "b1", 3.0, b"b's answer")
    assert j3.tasks["b2"].output == b"b's answer"
    j4 = sched.submit("j4", "", [TaskSpec("a2", "search", payload=Q, tenant="a")], 4.0)
    assert j4.tasks["a2"].output == b"a's answer"
    assert events_of(j4, "a2")[-1].cache_layer == "exact"
