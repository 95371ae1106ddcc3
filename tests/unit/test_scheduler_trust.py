"""What one joined agent can do to the others, in the pure core (issue #17 finding 3): a result,
start or progress report counts only from the agent given that attempt (an earlier attempt's
late success still wins its race, a reconnected agent keeps what it reclaimed), and a handler's
traits are the first definition while any agent offering it is connected."""

from __future__ import annotations

from deerflow_controller.core.model import HOLDERS_KEPT, HandlerTraits, TaskState
from deerflow_controller.core.scheduler import AttemptResult, RestoredJob

from .scheduling import JOB, key, make, ok, spec


def test_a_result_from_an_agent_never_given_the_attempt_does_not_end_the_task() -> None:
    s = make()
    s.agent_joined("real", ["echo"], 1, 0.0)
    s.agent_joined("impostor", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a")], 0.0)
    task = job.tasks["a"]
    holder = task.agent_id
    other = "impostor" if holder == "real" else "real"
    s.take()
    # Its current attempt, and one not dispatched yet.
    s.finished(other, [ok("a", 1, b"forged"), ok("a", 2, b"forged")], 1.0)
    assert task.state == TaskState.DISPATCHED and task.agent_id == holder
    assert s.counters.foreign_results == 2 and s.take().cancels == {}
    s.finished(holder, [ok("a", 1, b"real")], 2.0)
    assert (task.state, task.output) == (TaskState.SUCCEEDED, b"real")


def test_a_forged_result_feeds_neither_the_rate_limiter_nor_recovery() -> None:
    s = make()
    s.agent_joined("real", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a")], 0.0)
    s.agent_joined("impostor", ["echo"], 1, 0.0)
    forged = AttemptResult(key("a", 1), ok=False, metadata={"http_status": "429"})
    s.finished("impostor", [forged], 1.0)
    assert job.tasks["a"].failures == 0 and job.tasks["a"].state == TaskState.DISPATCHED


def test_the_agent_that_ran_an_earlier_attempt_still_wins_the_race() -> None:
    s = make(timeout_grace_s=0.0)
    s.agent_joined("first", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a", timeout_s=5.0)], 0.0)
    s.started("first", [key("a", 1)], 0.5)
    s.agent_joined("second", ["echo"], 1, 1.0)
    task = job.tasks["a"]
    now = 1.0
    for _ in range(100):
        if task.attempt == 2:
            break  # attempt 1 times out on "first" (which stays busy with it) ...
        when = s.next_timer()
        assert when is not None
        now = when
        s.tick(now)
    s.take()
    assert (task.attempt, task.agent_id) == (2, "second")
    s.finished("first", [ok("a", 1, b"late")], now)  # ... and finishes first after all
    assert (task.state, task.output) == (TaskState.SUCCEEDED, b"late")
    assert s.take().cancels == {"second": [key("a", 2)]}


def test_a_reconnected_agent_reports_the_attempt_it_reclaimed() -> None:
    s = make()
    s.agent_joined("ag", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a")], 0.0)
    s.agent_left("ag", 1.0, reconnecting=True)
    s.agent_joined("ag", ["echo"], 1, 1.0, running=[key("a", 1)])
    s.finished("ag", [ok("a", 1)], 2.0)
    assert job.tasks["a"].state == TaskState.SUCCEEDED


def test_an_agent_that_gave_an_attempt_back_may_still_report_it() -> None:
    s = make()
    s.agent_joined("a1", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a")], 0.0)
    s.agent_draining("a1", [key("a", 1)], 1.0)
    s.agent_joined("a2", ["echo"], 1, 1.0)
    assert job.tasks["a"].agent_id == "a2"
    s.finished("a1", [ok("a", 1, b"raced")], 2.0)
    assert job.tasks["a"].output == b"raced"


def test_starts_and_progress_count_only_from_the_holder() -> None:
    s = make()
    s.agent_joined("real", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a")], 0.0)
    s.agent_joined("impostor", ["echo"], 1, 0.0)
    s.started("impostor", [key("a", 1)], 1.0)
    assert job.tasks["a"].state == TaskState.DISPATCHED
    s.started("real", [key("a", 1)], 1.0)
    s.progress("impostor", [key("a", 1)], 2.0, reports={key("a", 1): (0.5, "forged")})
    assert job.tasks["a"].progress_at == 0.0
    assert TaskState.PROGRESS not in [e.state for e in job.events]


def test_the_holders_a_task_remembers_are_bounded() -> None:
    s = make()
    s.agent_joined("a1", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a")], 0.0)
    task = job.tasks["a"]
    for i in range(3 * HOLDERS_KEPT):
        s.agent_draining("a1", [task.key], float(i))
        s.agent_left("a1", float(i))
        s.agent_joined("a1", ["echo"], 1, float(i))
    assert task.attempt == 3 * HOLDERS_KEPT + 1
    assert len(task.holders) == 2 * HOLDERS_KEPT
    assert task.held_by(task.attempt) == "a1" and task.held_by(1) == ""


def test_a_restored_task_takes_a_buffered_result_only_until_it_is_dispatched() -> None:
    s = make()
    job = s.restore_job(RestoredJob(JOB, "", [spec("a"), spec("b")], {}), 0.0)
    s.agent_joined("ag", ["echo"], 1, 1.0)
    s.finished("ag", [ok("a", 3, b"buffered")], 1.5)
    assert job.tasks["a"].state == TaskState.SUCCEEDED
    s.release_restored(2.0)
    s.agent_joined("impostor", ["echo"], 1, 2.0)
    holder = job.tasks["b"].agent_id
    assert holder
    s.finished("impostor" if holder == "ag" else "ag", [ok("b", 1, b"forged")], 3.0)
    assert job.tasks["b"].state == TaskState.DISPATCHED


CPU = HandlerTraits(kind="cpu", items_field="items", default_duration_s=0.5)


def test_a_joining_agent_cannot_redefine_a_connected_handlers_traits() -> None:
    s = make()
    s.agent_joined("real", ["hash"], 1, 0.0, traits={"hash": CPU})
    hostile = {"hash": HandlerTraits(kind="io")}
    conflict = s.trait_conflict(hostile)
    assert conflict is not None
    assert conflict.startswith("handler 'hash' declares kind='io', but the agents already")
    assert s.trait_conflict({"hash": CPU}) is None
    # Were it let in anyway (two Hellos racing), the first definition stands.
    s.agent_joined("impostor", ["hash"], 1, 0.0, traits=hostile)
    assert s.traits["hash"] == CPU
    # Once no agent offering it is connected, the next one defines it.
    s.agent_left("real", 1.0)
    s.agent_left("impostor", 1.0)
    assert s.trait_conflict(hostile) is None
    s.agent_joined("new", ["hash"], 1, 2.0, traits=hostile)
    assert s.traits["hash"] == hostile["hash"]


def test_load_figures_out_of_range_are_clamped() -> None:
    s = make()
    s.agent_joined("ag", ["echo"], 1, 0.0)
    s.heartbeat("ag", -3, float("nan"), float("inf"), 1.0, process_cpu_percent=-1.0)
    agent = s.agents["ag"]
    assert (agent.running, agent.cpu_percent, agent.memory_percent) == (0, 0.0, 100.0)
    assert agent.process_cpu_percent == 0.0


def test_a_joining_agent_cannot_claim_another_agents_lost_attempt() -> None:
    s = make()
    s.agent_joined("real", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("a")], 0.0)
    s.agent_left("real", 1.0)  # attempt 1 is lost; the task waits for an agent
    task = job.tasks["a"]
    assert (task.state, task.attempt, task.agent_id) == (TaskState.QUEUED, 1, "")
    s.agent_joined("impostor", ["echo"], 1, 2.0, running=[key("a", 1)])
    out = s.take()
    assert out.cancels == {"impostor": [key("a", 1)]}
    assert task.attempt == 2  # it is given a new attempt of its own instead
    s.finished("impostor", [ok("a", 1, b"forged")], 3.0)
    assert task.state == TaskState.DISPATCHED
