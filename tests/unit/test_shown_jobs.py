"""A job as a client may be shown it (``service/shown.py``): its tasks as of the deliverable
prefix of its event log, driven here by a real scheduler with a fake clock and a limit as the
journal's fence would set it (the first terminal event not yet committed)."""

from __future__ import annotations

from deerflow_controller.core.model import Job, TaskState
from deerflow_controller.service.job_views import job_detail, list_jobs
from deerflow_controller.service.shown import ShownJob, Withheld, withheld

from .scheduling import JOB, fail, key, make, ok, spec


def _first_terminal(job: Job) -> int:
    return next(i for i, ev in enumerate(job.events) if ev.terminal)


def test_a_result_past_the_limit_is_shown_as_its_last_deliverable_state() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 2, 0.0)
    job = s.submit(JOB, "", [spec("t"), spec("u")], 0.0)
    s.started("A", [key("t", 1), key("u", 1)], 1.0)
    s.finished("A", [ok("t", 1, b"t's output")], 2.0)
    limit = _first_terminal(job)

    shown = ShownJob(job, limit)

    assert shown.withheld == {"t": Withheld(TaskState.RUNNING, 1, "A")}
    assert shown.state(job.tasks["t"]) is TaskState.RUNNING
    assert shown.by_state() == {"RUNNING": 2}
    assert withheld(job, limit, only="u") == {}

    s.finished("A", [ok("u", 1)], 3.0)
    assert job.done
    assert not ShownJob(job, limit).done and ShownJob(job, limit).finished_at == 0.0
    whole = ShownJob(job, len(job.events))
    assert whole.withheld == {} and whole.done and whole.finished_at == 3.0
    assert whole.by_state() == {"SUCCEEDED": 2}


def test_tasks_failed_with_their_dependency_past_the_limit_are_shown_pending() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 1, 0.0)
    job = s.submit(JOB, "", [spec("t"), spec("d1", "t"), spec("d2", "d1")], 0.0)
    s.started("A", [key("t", 1)], 1.0)
    s.finished("A", [fail("t", 1, retryable=True)], 2.0)  # a retry: no result
    s.tick(100.0)
    assert job.tasks["t"].state is TaskState.DISPATCHED and job.tasks["t"].attempt == 2
    s.finished("A", [fail("t", 2, retryable=False)], 101.0)
    limit = _first_terminal(job)

    shown = ShownJob(job, limit)

    assert shown.withheld == {
        "t": Withheld(TaskState.DISPATCHED, 2, "A"),
        "d1": Withheld(TaskState.PENDING, 0, ""),
        "d2": Withheld(TaskState.PENDING, 0, ""),
    }
    assert shown.by_state() == {"DISPATCHED": 1, "PENDING": 2}
    assert not shown.done


def test_the_jobs_view_withholds_a_result_past_the_limit() -> None:
    s = make()
    s.agent_joined("A", ["echo"], 2, 0.0)
    job = s.submit(JOB, "", [spec("t"), spec("u")], 0.0)
    s.started("A", [key("t", 1), key("u", 1)], 1.0)
    s.finished("A", [fail("t", 1, retryable=False), ok("u", 1)], 2.0)
    limit = _first_terminal(job)

    detail = job_detail(ShownJob(job, limit), 5.0, 0, 0)

    assert detail.job.state == "RUNNING" and detail.job.finished_at == 0.0
    assert dict(detail.job.tasks_by_state) == {"RUNNING": 2}
    t, u = detail.tasks
    for task in (t, u):
        assert task.state == "RUNNING" and task.agent_id == "A"
        assert not task.HasField("error") and task.finished_at == 0.0
        assert [e.state for e in task.events] == [2, 4, 5]  # QUEUED, DISPATCHED, RUNNING
        assert not task.spans[-1].ended_at
    listed = list_jobs([job], None, 5.0, 0, "", "", shown=lambda j: ShownJob(j, limit))
    assert [j.state for j in listed.jobs] == ["RUNNING"]
    failed = list_jobs([job], None, 5.0, 0, "", "FAILED", shown=lambda j: ShownJob(j, limit))
    assert not failed.jobs

    whole = job_detail(ShownJob.whole(job), 5.0, 0, 0)
    assert whole.job.state == "FAILED" and whole.job.finished_at == 2.0
    assert [t.state for t in whole.tasks] == ["FAILED", "SUCCEEDED"]
    assert whole.tasks[0].error.message.startswith("boom")
