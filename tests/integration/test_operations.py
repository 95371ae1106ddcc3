"""What operators touch: the CLI, health checking, reflection and the embedded demo."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from .conftest import ClusterFactory, connect


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deerflow_controller.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_submits_a_jsonl_file_and_reports_stats_and_agents(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    jobfile = tmp_path / "job.jsonl"
    jobfile.write_text(
        '{"id": "a", "handler": "echo", "payload": "one"}\n'
        '{"id": "b", "handler": "echo", "payload": {"n": 2}, "depends_on": ["a"]}\n'
    )
    async with make_cluster(2) as cluster:
        await (await connect(cluster)).close()
        code, out, _ = await _cli("submit", str(jobfile), "--controller", cluster.address, "--wait")
        assert code == 0
        lines = out.strip().splitlines()
        assert lines[1:] == ["a\tSUCCEEDED\tone", 'b\tSUCCEEDED\t{"n":2}']
        code, out, _ = await _cli("stats", "--json", "--controller", cluster.address)
        assert code == 0 and json.loads(out)["succeeded"] == 2
        code, out, _ = await _cli("agents", "--json", "--controller", cluster.address)
        assert code == 0 and sorted(a["agent_id"] for a in json.loads(out)) == [
            "agent-1",
            "agent-2",
        ]


async def test_cli_reports_an_unreachable_controller_in_one_sentence() -> None:
    code, _, err = await _cli("stats", "--controller", "127.0.0.1:1")
    assert code == 1
    assert "UNAVAILABLE" in err and "is deerflow-controller running there?" in err


async def test_health_and_reflection_are_served(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(0)
    async with cluster, grpc.aio.insecure_channel(cluster.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = set()
        async for response in call:
            names = {s.name for s in response.list_services_response.service}
            break
    assert {
        "deerflow.v1.JobService",
        "deerflow.v1.AgentService",
        "deerflow.v1.AdminService",
    } <= names


async def test_the_embedded_demo_runs_to_completion_its_reporter_reading_every_steps_findings() -> (
    None
):
    code, out, err = await _cli(
        "demo", "--reports", "2", "--time-scale", "0.02", "--agents", "2", env={"COLUMNS": "200"}
    )
    assert code == 0, err
    assert "demo summary" in out and "failures" in out
    # Each reporter's answer names, as its context, the findings of each of its three steps,
    # which reached it as task inputs (issue #15).
    (line,) = [x for x in out.splitlines() if "reports written from all their steps" in x]
    assert line.split()[-2] == "2/2", line
