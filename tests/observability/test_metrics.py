"""Prometheus /metrics on the controller and on agents, scraped over HTTP after real jobs."""

from __future__ import annotations

import json

from deerflow_controller.client import Task

from .conftest import ClusterFactory, http_get, parse_metrics, sample


async def test_controller_metrics_count_tasks_latency_agents_and_rate_keys(
    plugin_env: None, make_cluster: ClusterFactory
) -> None:
    cluster = await make_cluster(2, slots=4, agent_args=("--handler", "obs_test_plugins:flaky"))
    tasks = [Task(f"e{i}", "echo", "x") for i in range(20)]
    tasks += [Task(f"k{i}", "echo", "x", rate_keys=["llm/key-1"]) for i in range(5)]
    tasks += [Task("f", "flaky", "x", priority=3), Task("bad", "no_such_handler")]
    async with await cluster.client() as client:
        results = await (await client.submit(tasks)).wait(timeout_s=30)
        # The same request twice, asking for the cache: the second is an exact hit.
        for _ in range(2):
            job = await client.submit([Task("c", "echo", "same", cache="on")])
            await job.wait(timeout_s=30)
    assert sum(r.ok for r in results.values()) == 26

    status, text = await http_get(f"{cluster.http}/metrics")
    assert status == 200
    m = parse_metrics(text)
    assert sample(m, "deerflow_tasks_submitted_total") == 29
    # 25 + the two cache tasks (one ran, one was answered by the cache)
    assert sample(m, "deerflow_tasks_finished_total", handler="echo", state="SUCCEEDED") == 27
    assert sample(m, "deerflow_tasks_finished_total", handler="flaky", state="SUCCEEDED") == 1
    assert (
        sample(m, "deerflow_tasks_finished_total", handler="no_such_handler", state="FAILED") == 1
    )
    assert sample(m, "deerflow_task_failures_total", kind="UNKNOWN_HANDLER") == 1
    assert sample(m, "deerflow_task_retries_total", handler="flaky", kind="HANDLER_ERROR") == 1
    # Nothing is left in flight once the job is done.
    for state in ("pending", "queued", "throttled", "dispatched", "running"):
        assert sample(m, "deerflow_tasks", state=state) == 0
    # Histograms: one wait per dispatch, one run per attempt, cumulative buckets.
    assert sample(m, "deerflow_task_schedule_to_start_seconds_count", handler="echo") == 26
    assert sample(m, "deerflow_task_schedule_to_start_seconds_count", handler="flaky") == 2
    assert sample(m, "deerflow_task_run_seconds_count", handler="flaky") == 2
    run_sum = sample(m, "deerflow_task_run_seconds_sum", handler="echo")
    assert 0 < run_sum < 26 * 5.0
    assert sample(m, "deerflow_task_run_seconds_bucket", handler="echo", le="+Inf") == 26
    assert sample(m, "deerflow_task_run_seconds_bucket", handler="echo", le="600") == 26
    # Agents and their load.
    assert sample(m, "deerflow_agents") == 2
    completed = 0.0
    for agent in ("agent-1", "agent-2"):
        assert sample(m, "deerflow_agent_slots", agent=agent) == 4
        assert sample(m, "deerflow_agent_in_flight", agent=agent) == 0
        assert 0 <= sample(m, "deerflow_agent_heartbeat_age_seconds", agent=agent) < 15
        completed += sample(m, "deerflow_agent_completed_total", agent=agent)
    assert completed == 28  # 26 echo + 2 flaky attempts
    # The rate key's limiter.
    assert sample(m, "deerflow_ratelimit_admitted_total", key="llm/key-1") == 5
    assert sample(m, "deerflow_ratelimit_in_flight", key="llm/key-1") == 0
    assert sample(m, "deerflow_ratelimit_paced_rps", key="llm/key-1") > 0
    assert sample(m, "process_resident_memory_bytes") > 10e6
    assert not [k for k in m if k[0].startswith("deerflow_tracing_")]  # tracing is off
    # Scheduling and cache series.
    assert sample(m, "deerflow_cache_hits_total", layer="exact") == 1
    assert sample(m, "deerflow_cache_misses_total") == 1
    assert sample(m, "deerflow_cache_entries") == 1
    assert sample(m, "deerflow_schedule_timeouts_total") == 0
    assert sample(m, "deerflow_circuit_trips_total", key="handler:flaky") == 0
    assert sample(m, "deerflow_retained_output_bytes") == 0  # no task read another's output


async def test_agent_metrics_count_attempts_by_outcome_and_provider_status(
    plugin_env: None, make_cluster: ClusterFactory
) -> None:
    cluster = await make_cluster(
        1,
        slots=4,
        agent_metrics=True,
        agent_args=(
            "--handler",
            "obs_test_plugins:flaky",
            "--handler",
            "obs_test_plugins:provider_ok",
        ),
    )
    tasks = [Task(f"e{i}", "echo", "x") for i in range(10)]
    tasks += [Task("f", "flaky", "x"), Task("p", "provider_ok", "x")]
    async with await cluster.client() as client:
        await (await client.submit(tasks)).wait(timeout_s=30)
    port = cluster.agent_ports["agent-1"]
    status, text = await http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    m = parse_metrics(text)
    a = {"agent": "agent-1"}
    assert (
        sample(m, "deerflow_agent_attempts_total", **a, handler="echo", outcome="succeeded") == 10
    )
    assert (
        sample(m, "deerflow_agent_attempts_total", **a, handler="flaky", outcome="handler_error")
        == 1
    )
    assert (
        sample(m, "deerflow_agent_attempts_total", **a, handler="flaky", outcome="succeeded") == 1
    )
    assert (
        sample(m, "deerflow_agent_provider_responses_total", **a, handler="flaky", status="429")
        == 1
    )
    assert (
        sample(
            m, "deerflow_agent_provider_responses_total", **a, handler="provider_ok", status="200"
        )
        == 1
    )
    assert sample(m, "deerflow_agent_run_seconds_count", handler="echo") == 10
    assert sample(m, "deerflow_agent_slots", **a) == 4
    assert sample(m, "deerflow_agent_connected", **a) == 1
    assert sample(m, "deerflow_agent_running", **a) == 0


async def test_health_and_readiness_over_http(
    plugin_env: None, make_cluster: ClusterFactory
) -> None:
    cluster = await make_cluster(1, agent_metrics=True)
    async with await cluster.client() as client:
        # A result came back over the agent's stream: the agent is connected on its side too.
        await (await client.submit([Task("a", "echo", "x")])).wait(timeout_s=30)
    assert (await http_get(f"{cluster.http}/healthz"))[0] == 200
    status, body = await http_get(f"{cluster.http}/readyz")
    assert status == 200
    assert json.loads(body) == {"ready": True, "serving": True, "agents": 1}
    agent = f"http://127.0.0.1:{cluster.agent_ports['agent-1']}"
    assert (await http_get(f"{agent}/healthz"))[0] == 200
    status, body = await http_get(f"{agent}/readyz")
    assert status == 200
    assert json.loads(body) == {"ready": True, "connected": True, "draining": False}
