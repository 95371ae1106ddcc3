"""Issue #17, item 5: an API key in a task's payload never reaches the logs, the spans or the
dashboard.

A real cluster (controller and agent processes, everything logged at DEBUG) exports its spans to
the real OTLP receiver; tasks carry the key in their payloads and fail in the ways that put text
into those channels: a careless plugin that logs its payload and raises with it, an http URL with
the key in its query, a provider that echoes the key in its error. The key must appear in none
of the spans, the daemons' output or the dashboard, while the failures themselves do arrive.
"""

from __future__ import annotations

import json

import pytest

from deerflow_bench import OtlpReceiver
from deerflow_controller.client import Task
from tests.recording_server import RecordingServer

from .conftest import ClusterFactory, http_get

SECRET = "sk-live-SECRET-4f9a2c7e1b"


async def test_an_api_key_in_a_payload_reaches_no_log_span_or_dashboard(
    tracing_env: str,
    receiver: OtlpReceiver,
    make_cluster: ClusterFactory,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DEERFLOW_LOG_LEVEL", "DEBUG")
    async with RecordingServer() as upstream:
        cluster = await make_cluster(
            1,
            agent_args=("--handler", "obs_test_plugins:careless", "--http-allow", "127.0.0.1/32"),
        )
        tasks = [
            Task("careless", "careless", {"api_key": SECRET, "q": "x"}, max_retries=0),
            Task("http", "http", {"url": f"{upstream.url}/status/404?api_key={SECRET}"}),
            Task(
                "echoing-provider",
                "llm",
                {
                    "prompt": "hi",
                    "model": "m",
                    "api_key": SECRET,
                    "base_url": f"{upstream.url}/status/400",
                },
                max_retries=0,
            ),
            Task(
                "good-provider",
                "llm",
                {"prompt": "hi", "model": "m", "api_key": SECRET, "base_url": upstream.url},
            ),
        ]
        async with await cluster.client() as client:
            job = await client.submit(tasks)
            results = await job.wait(timeout_s=30)
        status, stats = await http_get(f"{cluster.http}/api/stats")
        _, page = await http_get(f"{cluster.http}/")
    await receiver.wait_for_count(2 * len(tasks), timeout_s=30)
    exported = b"".join(receiver._raw)  # the raw OTLP requests, every attribute and event
    spans = receiver.spans()
    logs = capfd.readouterr()

    # The key went where the payload sent it, and only there.
    assert f"Bearer {SECRET}" in upstream.everything_received()
    assert results["good-provider"].ok and SECRET not in results["good-provider"].output.decode()
    # The failures arrived in every channel...
    assert {t: r.ok for t, r in results.items() if t != "good-provider"} == {
        "careless": False,
        "http": False,
        "echoing-provider": False,
    }
    assert status == 200
    recent = {e["task"]: e["message"] for e in json.loads(stats)["errors"]["recent"]}
    assert "careless cannot handle" in recent["careless"] and "***" in recent["careless"]
    assert "404" in recent["http"]
    assert any(s.status_code == 2 and "careless cannot handle" in s.status_message for s in spans)
    assert "careless got" in logs.err
    # ...without the key.
    for task_id, result in results.items():
        assert SECRET not in result.error + result.detail, task_id
    assert SECRET.encode() not in exported
    assert SECRET not in stats and SECRET not in page
    assert SECRET not in logs.err and SECRET not in logs.out
