"""Readiness follows the controller's life: gRPC health and /readyz say NOT_SERVING as soon
as it starts draining, while /healthz still answers. An agent without a controller is alive
but not ready."""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deerflow_controller.config import ControllerConfig
from deerflow_controller.service.launcher import ManagedProcess, _env
from deerflow_controller.service.server import Controller, _serve_http

from .conftest import free_port, http_get


async def _grpc_health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        return int(reply.status)


async def test_controller_reports_not_serving_while_it_drains() -> None:
    controller = Controller(ControllerConfig(port=0))
    http = await _serve_http(controller, "127.0.0.1", free_port())
    assert http is not None
    await controller.start()
    try:
        assert await _grpc_health(controller.address) == health_pb2.HealthCheckResponse.SERVING
        assert (await http_get(f"http://{http}/readyz"))[0] == 200
        await controller.begin_drain()
        status, body = await http_get(f"http://{http}/readyz")
        assert status == 503 and json.loads(body)["ready"] is False
        assert (await http_get(f"http://{http}/healthz"))[0] == 200
        assert await _grpc_health(controller.address) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await controller.stop(grace_s=0.5)


async def test_controller_http_port_taken_explicitly_is_an_error() -> None:
    controller = Controller(ControllerConfig(port=0))
    first = await _serve_http(controller, "127.0.0.1", free_port())
    assert first is not None
    try:
        other = Controller(ControllerConfig(port=0))
        with pytest.raises(OSError, match="--http-port"):
            await _serve_http(other, "127.0.0.1", int(first.rsplit(":", 1)[1]))
    finally:
        await controller.stop(grace_s=0.1)


async def test_an_agent_without_a_controller_is_alive_but_not_ready() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deerflow_agent",
        "--controller",
        f"127.0.0.1:{free_port()}",  # nobody listens there
        "--id",
        "lonely",
        "--metrics-port",
        str(free_port()),
        stdout=asyncio.subprocess.PIPE,
        env=_env(quiet=True),
    )
    agent = ManagedProcess(proc, "lonely")
    try:
        url = "http://" + await agent._await_ready_line("deerflow-agent metrics on ", 30)
        assert (await http_get(f"{url}/healthz"))[0] == 200
        status, body = await http_get(f"{url}/readyz")
        assert status == 503
        assert json.loads(body) == {"ready": False, "connected": False, "draining": False}
    finally:
        await agent.stop()
