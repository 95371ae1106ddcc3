"""One trace per task across the client, controller and agent processes, exported over real
OTLP/gRPC to a receiver in the test process."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from opentelemetry.sdk.trace import TracerProvider

from deerflow_bench import OtlpReceiver, ReceivedSpan
from deerflow_controller.client import Task

from .conftest import CLIENT_SERVICE, ClusterFactory

KIND_INTERNAL, KIND_PRODUCER, KIND_CONSUMER = 1, 4, 5
STATUS_ERROR = 2


def _by_task(spans: list[ReceivedSpan], name: str) -> dict[str, list[ReceivedSpan]]:
    out: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for s in spans:
        if s.name == name:
            out[str(s.attributes["deerflow.task.id"])].append(s)
    return out


async def test_every_task_has_one_connected_trace_across_client_controller_and_agent(
    tracing_env: str,
    receiver: OtlpReceiver,
    client_tracer: TracerProvider,
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(2, slots=4, agent_args=("--handler", "obs_test_plugins:flaky"))
    client = await cluster.client(tracer_provider=client_tracer)
    ids = [f"t{i}" for i in range(3)]
    async with client:
        handles = [await client.submit([Task(t, "echo", t)], name=f"job-{t}") for t in ids]
        dag = await client.submit(
            [
                Task("plan", "echo", "p"),
                Task("report", "sleep", {"seconds": 0.01}, depends_on=["plan"]),
            ],
            name="dag",
        )
        for h in [*handles, dag]:
            assert all(r.ok for r in (await h.wait(timeout_s=30)).values())
    await asyncio.to_thread(client_tracer.force_flush)
    # 4 submits + 5 tasks x (schedule + execute)
    spans = await receiver.wait_for_spans(14, timeout_s=30)
    assert len(spans) == 14, [(s.service, s.name) for s in spans]

    submits = {s.attributes["deerflow.job.id"]: s for s in spans if s.name == "deerflow.submit"}
    schedules = _by_task(spans, "deerflow.schedule")
    executes = _by_task(spans, "deerflow.execute")
    jobs = {h.job_id: h for h in handles} | {dag.job_id: dag}
    assert set(submits) == set(jobs)
    for task_id in [*ids, "plan", "report"]:
        (schedule,) = schedules[task_id]
        (execute,) = executes[task_id]
        submit = submits[schedule.attributes["deerflow.job.id"]]
        # One trace, three processes, each span the child of the one before.
        assert (submit.service, schedule.service, execute.service) == (
            CLIENT_SERVICE,
            "deerflow-controller",
            "deerflow-agent",
        )
        assert submit.kind == KIND_PRODUCER and submit.parent_span_id == ""
        assert schedule.trace_id == execute.trace_id == submit.trace_id
        assert schedule.parent_span_id == submit.span_id
        assert execute.parent_span_id == schedule.span_id
        # The attributes that find a task: job, task, handler, attempt, agent.
        for s in (schedule, execute):
            assert s.attributes["deerflow.job.id"] == submit.attributes["deerflow.job.id"]
            assert s.attributes["deerflow.attempt"] == 1
        assert schedule.attributes["deerflow.handler"] == execute.attributes["deerflow.handler"]
        assert schedule.attributes["deerflow.agent.id"] == execute.attributes["deerflow.agent.id"]
        assert execute.attributes["deerflow.agent.id"] in ("agent-1", "agent-2")
        assert execute.attributes["deerflow.outcome"] == "succeeded"
        # The wait ends when the attempt is dispatched, before the handler starts.
        assert schedule.start_ns <= schedule.end_ns <= execute.start_ns <= execute.end_ns
    # Tasks submitted on their own each have a trace of their own.
    assert len({schedules[t][0].trace_id for t in ids}) == len(ids)
    # A dependent's wait starts when it became ready, after its dependency ended.
    assert schedules["report"][0].start_ns >= executes["plan"][0].end_ns


async def test_a_retried_task_shows_each_attempt_and_why_it_was_retried(
    tracing_env: str,
    receiver: OtlpReceiver,
    client_tracer: TracerProvider,
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(1, agent_args=("--handler", "obs_test_plugins:flaky"))
    async with await cluster.client(tracer_provider=client_tracer) as client:
        job = await client.submit([Task("f", "flaky", "x", max_retries=2)])
        result = await job.result("f", timeout_s=30)
        assert result.ok
    await asyncio.to_thread(client_tracer.force_flush)
    spans = await receiver.wait_for_spans(5, timeout_s=30)  # submit + 2 x (schedule, execute)
    schedules = sorted(_by_task(spans, "deerflow.schedule")["f"], key=lambda s: s.start_ns)
    executes = sorted(_by_task(spans, "deerflow.execute")["f"], key=lambda s: s.start_ns)
    assert [s.attributes["deerflow.attempt"] for s in schedules] == [1, 2]
    assert [s.attributes["deerflow.attempt"] for s in executes] == [1, 2]
    assert len({s.trace_id for s in [*schedules, *executes]}) == 1
    first, second = executes
    assert first.status_code == STATUS_ERROR and "429" in first.status_message
    assert first.attributes["http.response.status_code"] == 429
    assert "rate_limited" in first.events
    assert second.status_code != STATUS_ERROR
    # The second wait starts at the failure and says why.
    assert "retry" in schedules[1].events
    assert schedules[1].start_ns >= first.end_ns
    assert second.parent_span_id == schedules[1].span_id


async def test_a_task_without_trace_context_starts_its_trace_in_the_controller(
    tracing_env: str, receiver: OtlpReceiver, make_cluster: ClusterFactory
) -> None:
    cluster = await make_cluster(1)
    async with await cluster.client() as client:  # no tracer provider: the API is a no-op
        job = await client.submit([Task("a", "echo", "x"), Task("b", "echo", "y")])
        await job.wait(timeout_s=30)
    spans = await receiver.wait_for_spans(4, timeout_s=30)
    assert not [s for s in spans if s.name == "deerflow.submit"]
    schedules = _by_task(spans, "deerflow.schedule")
    executes = _by_task(spans, "deerflow.execute")
    for task_id in ("a", "b"):
        (schedule,), (execute,) = schedules[task_id], executes[task_id]
        assert schedule.parent_span_id == ""
        assert execute.trace_id == schedule.trace_id
        assert execute.parent_span_id == schedule.span_id
    assert schedules["a"][0].trace_id != schedules["b"][0].trace_id


async def test_a_handler_that_asks_gets_its_execute_span_as_the_parent_to_pass_on(
    tracing_env: str,
    receiver: OtlpReceiver,
    client_tracer: TracerProvider,
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(1, agent_args=("--handler", "obs_test_plugins:context_echo"))
    async with await cluster.client(tracer_provider=client_tracer) as client:
        job = await client.submit([Task(f"c{i}", "context_echo", "x") for i in range(3)])
        results = await job.wait(timeout_s=30)
    await asyncio.to_thread(client_tracer.force_flush)
    spans = await receiver.wait_for_spans(7, timeout_s=30)  # submit + 3 x (schedule, execute)
    executes = _by_task(spans, "deerflow.execute")
    for task_id, result in results.items():
        assert result.ok
        version, trace_id, span_id, flags = result.output.decode().split("-")
        (execute,) = executes[task_id]
        # The handler's context names the span it runs in: a provider call it makes (or a
        # span it starts) joins the task's trace under the execute span.
        assert (version, trace_id, span_id, flags) == (
            "00",
            execute.trace_id,
            execute.span_id,
            "01",
        )


async def test_a_task_that_never_runs_closes_its_wait_with_the_reason(
    tracing_env: str,
    receiver: OtlpReceiver,
    client_tracer: TracerProvider,
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(1)
    async with await cluster.client(tracer_provider=client_tracer) as client:
        job = await client.submit(
            [Task("nope", "no_such_handler"), Task("after", "echo", "x", depends_on=["nope"])]
        )
        results = await job.wait(timeout_s=30)
        assert {r.state for r in results.values()} == {"FAILED"}
    await asyncio.to_thread(client_tracer.force_flush)
    spans = await receiver.wait_for_spans(3, timeout_s=30)
    schedules = _by_task(spans, "deerflow.schedule")
    for task_id, kind in (("nope", "no connected agent"), ("after", "dependency")):
        (span,) = schedules[task_id]
        assert span.status_code == STATUS_ERROR
        assert kind in span.status_message
        assert span.attributes["deerflow.state"] == "FAILED"
    assert not [s for s in spans if s.name == "deerflow.execute"]
