"""The jobs pages in a real browser (issue #18 item 3): headless Chromium from Debian's packages
opens ``/jobs`` and one job's page ``/jobs#job=ID`` on a running controller whose agents ran a
real job with a retried task, a failed one and a dependent that could not run. The page shows
the tasks, the timeline of attempts per agent and the failure's error and detail, and renders
every client-supplied value (task id, job name) as text, never as markup. A screenshot is kept
in test-artifacts/jobs-page.png. The trace id it shows for a task is the one the tracing
backend (a real OTLP receiver) got the task's spans under."""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

from opentelemetry.sdk.trace import TracerProvider

from deerflow_bench import OtlpReceiver
from deerflow_controller.client import Task

from .conftest import ClusterFactory
from .test_dashboard import ARTIFACTS, _TextById, chromium, needs_chromium

# Each would set data-pwned on <body> if the page ever parsed it as markup.
BAD_ID = "<img src=x onerror=document.body.dataset.pwned=1>"
BAD_NAME = "<script>document.body.dataset.pwned=2</script><b>research</b>"


class _Tags(HTMLParser):
    """Every start tag of the DOM, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


async def _rendered(tmp_path: Path, url: str, ready: str, tries: int = 6) -> tuple[str, _TextById]:
    """The page's DOM once it rendered an answer whose text under id ``ready`` is not empty:
    each try gives the page 5 s of virtual time (a loaded machine may need a few)."""
    dom, page = "", _TextById()
    for i in range(tries):
        dom = await chromium(tmp_path / f"dom{i}", "--virtual-time-budget=5000", "--dump-dom", url)
        page = _TextById()
        page.feed(dom)
        if int(page.body.get("data-updates", "0")) >= 1 and page.text.get(ready, "").strip():
            return dom, page
    raise AssertionError(f"{url} never rendered #{ready}: {page.text.get('updated')!r}")


@needs_chromium
async def test_the_job_page_shows_a_real_jobs_tasks_timeline_and_failure_as_text(
    plugin_env: None, make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    plugins = ("--handler", "obs_test_plugins:flaky", "--handler", "obs_test_plugins:refuses")
    cluster = await make_cluster(2, slots=4, agent_args=plugins)
    tasks = [
        Task("fetch", "echo", "page"),
        Task("flaky-step", "flaky", "x", depends_on=["fetch"]),
        Task(BAD_ID, "refuses", "plan-7", depends_on=["fetch"]),
        Task("report", "echo", "x", depends_on=["flaky-step", BAD_ID]),
    ]
    async with await cluster.client() as client:
        fine = await client.submit([Task("one", "echo", "x")], name="fine")
        await fine.wait(timeout_s=30)
        job = await client.submit(tasks, name=BAD_NAME)
        await job.wait(timeout_s=30)

    url = f"{cluster.http}/jobs#" + urlencode({"job": job.job_id})
    dom, page = await _rendered(tmp_path, url, "job-tasks")
    t = page.text
    assert page.body["data-view"] == "job"
    assert "data-pwned" not in page.body, "a client's value ran as script"
    tags = _Tags()
    tags.feed(dom)
    assert "img" not in tags.tags and tags.tags.count("script") == 1
    assert t["job-id"] == job.job_id and t["job-name"] == BAD_NAME and t["job-state"] == "FAILED"
    # The tasks table: every task, its handler and state; the bad id shown as the text it is.
    for text in ("fetch", "flaky-step", BAD_ID, "report", "refuses", "SUCCEEDED", "FAILED"):
        assert text in t["job-tasks"], text
    assert "agent-" in t["job-tasks"]
    # The DAG's edges.
    assert f"fetch \u2192 {BAD_ID}" in t["job-edges"]
    assert "flaky-step \u2192 report" in t["job-edges"]
    # The failure: the handler's sentence; the dependent's reason names the failed task.
    failures = t["job-failures"]
    assert "the provider refused 'plan-7': quota exhausted" in failures
    assert "report" in failures and "DEPENDENCY_FAILED" in failures
    # The timeline: a lane per agent that ran something, a bar per attempt (flaky ran twice).
    assert "agent-" in t["job-timeline"]
    assert dom.count('class="span"') >= 4
    # Events, with the retry's error and the controller's detail sentences.
    assert "RETRYING" in t["job-events"] and "provider said 429" in t["job-events"]
    assert "retry 1 of" in t["job-events"]  # the controller's detail sentence

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "jobs-page.png"
    shot.unlink(missing_ok=True)
    await chromium(
        tmp_path / "shot",
        "--virtual-time-budget=5000",
        "--window-size=1280,1100",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        url,
    )
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one

    # The list: the job with its state, counts and name, as text; a link to its page.
    dom, page = await _rendered(tmp_path / "list", f"{cluster.http}/jobs", "jobs")
    assert page.body["data-view"] == "list" and "data-pwned" not in page.body
    listed = page.text["jobs"]
    assert job.job_id in listed and BAD_NAME in listed and "FAILED" in listed
    assert "2 succeeded" in listed and "2 failed" in listed
    assert f'href="jobs#job={job.job_id}"' in dom
    assert fine.job_id in listed and "SUCCEEDED" in listed
    assert dom.index(job.job_id) < dom.index(fine.job_id)  # newest first
    # Filtered by state: only the failed job.
    dom, page = await _rendered(tmp_path / "failed", f"{cluster.http}/jobs#state=FAILED", "jobs")
    assert job.job_id in page.text["jobs"] and fine.job_id not in page.text["jobs"]


async def test_a_tasks_trace_id_in_the_jobs_view_is_the_trace_the_backend_received(
    tracing_env: str,
    receiver: OtlpReceiver,
    client_tracer: TracerProvider,
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(1)
    async with await cluster.client(tracer_provider=client_tracer) as client:
        job = await client.submit([Task("a", "echo", "x"), Task("b", "echo", "y")])
        await job.wait(timeout_s=30)
        detail = await client.job_detail(job.job_id)
    await asyncio.to_thread(client_tracer.force_flush)
    spans = await receiver.wait_for_spans(5, timeout_s=30)  # a submit, 2 x (schedule, execute)
    traces = {
        str(s.attributes["deerflow.task.id"]): s.trace_id
        for s in spans
        if s.name == "deerflow.execute"
    }
    assert {t.task_id: t.trace_id for t in detail.tasks} == traces
    assert all(len(t) == 32 for t in traces.values())
