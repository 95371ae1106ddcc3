"""Issue #18 item 3: the jobs view's API. ``AdminService.ListJobs`` and ``GetJob`` (and the CLI's
``deerflow jobs`` / ``deerflow job ID`` on them) show a real job run by a real agent: its tasks,
their states, attempts, agents, times and the failure's error and detail; a user token sees only
its tenant's jobs, on gRPC and on the HTTP side."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider

from deerflow_controller.client import (
    AsyncClient,
    AuthenticationError,
    InvalidJobError,
    NotFoundError,
    PermissionDeniedError,
    Task,
)
from deerflow_protos import common_pb2
from tests.auth_files import Tokens, auth_toml, write_atomically

from .conftest import ClusterFactory, connect
from .test_auth import Secured, start_secured
from .test_operations import _cli

# Neither id nor name may ever be parsed as markup by a view (tests/observability checks the page).
BAD_ID = "<img src=x onerror=alert(1)>"
FAILS = ("--handler", "deerflow_test_plugins:always_fails")


def _failing_job() -> list[Task]:
    """fetch succeeds; BAD_ID fails (its handler raises); report depends on it and fails too."""
    return [
        Task("fetch", "echo", "page"),
        Task(BAD_ID, "always_fails", "the plan", depends_on=["fetch"]),
        Task("report", "echo", "x", depends_on=[BAD_ID]),
    ]


async def test_list_jobs_and_get_job_show_the_tasks_states_attempts_and_the_failures_detail(
    plugin_path: None, make_cluster: ClusterFactory
) -> None:
    async with make_cluster(1, agent_args=FAILS) as cluster:
        await (await connect(cluster)).close()
        client = AsyncClient(cluster.address, timeout_s=30, tracer_provider=TracerProvider())
        async with client:
            first = await client.submit([Task("only", "echo", "x")], name="first")
            await first.wait(timeout_s=30)
            job = await client.submit(_failing_job(), name="research <b>")
            await job.wait(timeout_s=30)

            page = await client.list_jobs()
            assert [j.job_id for j in page.jobs] == [job.job_id, first.job_id]  # newest first
            assert page.held == 2 and page.next_cursor == ""
            summary = page.jobs[0]
            assert (summary.name, summary.state, summary.total) == ("research <b>", "FAILED", 3)
            assert dict(summary.tasks_by_state) == {"SUCCEEDED": 1, "FAILED": 2}
            assert summary.finished_at >= summary.submitted_at > 0 and summary.age_s >= 0
            assert page.jobs[1].state == "SUCCEEDED"

            # Pages of one: the cursor walks newest to oldest; the filter by state.
            one = await client.list_jobs(limit=1)
            assert [j.job_id for j in one.jobs] == [job.job_id] and one.next_cursor
            two = await client.list_jobs(limit=1, cursor=one.next_cursor)
            assert [j.job_id for j in two.jobs] == [first.job_id] and two.next_cursor == ""
            ok = await client.list_jobs(state="succeeded")
            assert [j.job_id for j in ok.jobs] == [first.job_id]
            assert (await client.list_jobs(state="RUNNING")).jobs == []

            detail = await client.job_detail(job.job_id)
            assert detail.job.job_id == job.job_id and detail.note == ""
            tasks = {t.task_id: t for t in detail.tasks}
            assert [t.task_id for t in detail.tasks] == ["fetch", BAD_ID, "report"]
            fetch, bad, report = tasks["fetch"], tasks[BAD_ID], tasks["report"]
            assert (fetch.state, fetch.handler, fetch.attempts) == ("SUCCEEDED", "echo", 1)
            assert fetch.agent_id == "agent-1" and fetch.actual_s > 0
            assert [s.outcome for s in fetch.spans] == ["SUCCEEDED"]
            span = fetch.spans[0]
            # An attempt that ends in the loop turn it starts in has no RUNNING event of its own.
            assert span.dispatched_at <= (span.started_at or span.dispatched_at) <= span.ended_at
            assert re.fullmatch("[0-9a-f]{32}", fetch.trace_id)

            assert (bad.state, bad.handler, list(bad.depends_on)) == (
                "FAILED",
                "always_fails",
                ["fetch"],
            )
            assert "always_fails refuses 'the plan'" in bad.error.message
            states = [grpc_state(e.state) for e in bad.events]
            assert states[0] == "PENDING" or "DISPATCHED" in states
            assert states[-1] == "FAILED" and bad.events[-1].error.message == bad.error.message
            assert bad.spans[0].agent_id == "agent-1" and bad.spans[0].outcome == "FAILED"
            assert all(e.output == b"" for t in detail.tasks for e in t.events)

            assert report.state == "FAILED" and report.attempts == 0 and report.spans == []
            why = report.events[-1]
            assert BAD_ID in why.error.message or BAD_ID in why.detail

            # A page of one task says so, and where the next begins.
            part = await client.job_detail(job.job_id, task_limit=1, task_offset=1)
            assert [t.task_id for t in part.tasks] == [BAD_ID]
            assert part.next_task_offset == 2 and "tasks 2 to 2 of 3" in part.note

            with pytest.raises(InvalidJobError, match="limit 501 is outside 1 to 500"):
                await client.list_jobs(limit=501)
            with pytest.raises(InvalidJobError, match="is not one of RUNNING"):
                await client.list_jobs(state="lost")
            with pytest.raises(NotFoundError, match="no job 'nope'"):
                await client.job_detail("nope")


def grpc_state(value: int) -> str:
    return common_pb2.TaskState.Name(value)


async def test_the_cli_lists_jobs_and_shows_a_jobs_tasks_and_its_failure(
    plugin_path: None, make_cluster: ClusterFactory
) -> None:
    async with make_cluster(1, agent_args=FAILS) as cluster:
        async with await connect(cluster) as client:
            job = await client.submit(_failing_job(), name="research")
            await job.wait(timeout_s=30)
        where = ("--controller", cluster.address)
        wide = {"COLUMNS": "200"}  # rich's tables fit the terminal: 80 columns without one
        code, out, err = await _cli("jobs", "--json", *where)
        assert code == 0, err
        listed = json.loads(out)
        assert [j["job_id"] for j in listed["jobs"]] == [job.job_id]
        assert listed["jobs"][0]["tasks_by_state"] == {"SUCCEEDED": 1, "FAILED": 2}
        code, out, err = await _cli("jobs", *where, env=wide)
        assert code == 0, err
        assert job.job_id in out and "FAILED" in out and "1 succeeded" in out

        code, out, err = await _cli("job", job.job_id, *where, env=wide)
        assert code == 0, err
        assert "always_fails" in out and "FAILED" in out and "agent-1" in out
        # The failure, with its error (the handler's sentence) and the dependent's reason.
        assert "always_fails refuses 'the plan'" in out
        assert "report FAILED" in out
        code, out, err = await _cli("job", job.job_id, "--json", *where)
        assert code == 0, err
        detail = json.loads(out)
        assert [t["task_id"] for t in detail["tasks"]] == ["fetch", BAD_ID, "report"]
        assert detail["tasks"][1]["events"][-1]["state"] == "FAILED"

        code, _, err = await _cli("job", "nope", *where)
        assert code == 1 and "NOT_FOUND" in err and "no job 'nope'" in err


async def test_a_user_sees_only_its_tenants_jobs_and_an_admin_sees_every_tenants(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    t = Tokens()
    auth_file = tmp_path / "auth.toml"
    write_atomically(auth_file, auth_toml(t))
    secured: Secured = await start_secured(make_cluster, auth_file, t)
    async with secured.client(t.alice) as alice, secured.client(t.bob) as bob:
        a = await alice.submit([Task("x", "echo", "a")], name="alice's")
        b = await bob.submit([Task("y", "echo", "b")], name="bob's")
        await a.wait(timeout_s=30)
        await b.wait(timeout_s=30)
        mine = await alice.list_jobs()
        assert [(j.job_id, j.tenant) for j in mine.jobs] == [(a.job_id, "a")] and mine.held == 1
        assert [j.job_id for j in (await bob.list_jobs()).jobs] == [b.job_id]
        assert (await alice.job_detail(a.job_id)).tasks[0].task_id == "x"
        # Another tenant's job is answered as one that does not exist, word for word.
        with pytest.raises(NotFoundError) as theirs:
            await alice.job_detail(b.job_id)
        with pytest.raises(NotFoundError) as nothing:
            await alice.job_detail("f" * len(b.job_id))
        assert theirs.value.message.replace(b.job_id, "ID") == nothing.value.message.replace(
            "f" * len(b.job_id), "ID"
        )
    async with secured.client(t.admin) as admin:
        every = await admin.list_jobs()
        assert {j.job_id for j in every.jobs} == {a.job_id, b.job_id}
        assert (await admin.job_detail(b.job_id)).job.tenant == "b"
    async with secured.client(t.metrics) as scraper:
        with pytest.raises(PermissionDeniedError, match="may only read /metrics"):
            await scraper.list_jobs()
    async with secured.client(None) as anonymous:
        with pytest.raises(AuthenticationError):
            await anonymous.job_detail(a.job_id)

    # The HTTP side the jobs pages read: the same rules.
    async def get(path: str, token: str | None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s, s.get(secured.http + path, headers=headers) as r:
            return r.status, await r.json()

    status, body = await get("/api/jobs", t.bob)
    assert status == 200 and [j["job_id"] for j in body["jobs"]] == [b.job_id]
    status, body = await get(f"/api/job?id={a.job_id}", t.bob)
    assert status == 404 and "no job" in str(body["error"])
    status, body = await get(f"/api/job?id={a.job_id}", t.alice)
    assert status == 200 and body["job"]["name"] == "alice's"
    status, body = await get("/api/jobs", t.admin)
    assert status == 200 and len(body["jobs"]) == 2
    assert (await get("/api/jobs", t.metrics))[0] == 403
    assert (await get("/api/jobs", None))[0] == 401
    assert (await get("/api/jobs?limit=0x", t.admin))[0] == 400
