"""A watch open on a controller that stops leading must end once, with a code the SDK resumes on
(UNAVAILABLE) and the new leader's address, never NOT_FOUND and never with an error logged: the
job lives on with the next leader. Served in-process on loopback through the leader gate, as in
HA mode; the term's end is what the leadership loop does (the gate closes, the shell gets a fresh
scheduler), and in the second test the next term restores the job and touches it at once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from deerflow_controller.config import ControllerConfig
from deerflow_controller.core.model import TaskSpec
from deerflow_controller.core.scheduler import Scheduler
from deerflow_controller.ha import LEADER_METADATA, LeaderGate, Term
from deerflow_controller.ratelimit import RateLimiter
from deerflow_controller.service.job_service import JobService
from deerflow_controller.service.shell import Shell
from deerflow_protos import client_pb2, client_pb2_grpc, common_pb2

SUCCESSOR = "127.0.0.1:9"
"""The next leader's address as the stepping-down controller observes it (never dialled)."""


@dataclass
class Leading:
    shell: Shell
    gate: LeaderGate
    term: Term
    stub: client_pb2_grpc.JobServiceStub

    def end_term(self) -> None:
        """What ``HaRunner._end_term`` does to the gate and the shell, in one loop turn."""
        self.term.ended.set()
        self.gate.term = None
        self.gate.leader_address = ""
        config = self.shell.config
        self.shell.replace_scheduler(
            Scheduler(config.scheduler, limiter=RateLimiter(config.limits))
        )


@pytest.fixture
async def leading() -> AsyncIterator[Leading]:
    """A controller leading term 7 in-process, with job ``job-1`` (one task, no agent) watched."""
    shell = Shell(ControllerConfig())
    gate = LeaderGate("")
    server = grpc.aio.server(interceptors=[gate])
    client_pb2_grpc.add_JobServiceServicer_to_server(JobService(shell), server)
    port = server.add_insecure_port("127.0.0.1:0")
    gate.address = f"127.0.0.1:{port}"
    term = Term(7, None)
    gate.term, gate.leader_address = term, gate.address
    await server.start()
    try:
        async with grpc.aio.insecure_channel(gate.address) as channel:
            stub = client_pb2_grpc.JobServiceStub(channel)
            request = client_pb2.SubmitJobRequest(job_id="job-1")
            request.tasks.add(id="a", handler="echo", payload=b"x")
            await stub.SubmitJob(request)
            yield Leading(shell, gate, term, stub)
    finally:
        await server.stop(0)


async def ended_status(call: grpc.aio.UnaryStreamCall) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while await call.read() is not grpc.aio.EOF:
            pass
    return caught.value


async def test_a_watch_across_a_lost_leadership_ends_unavailable_not_not_found(
    leading: Leading,
) -> None:
    call = leading.stub.WatchJob(client_pb2.WatchJobRequest(job_id="job-1"))
    first = await call.read()  # no agent: the task waits QUEUED
    assert [e.state for e in first.events] == [common_pb2.QUEUED]

    leading.end_term()
    leading.gate.leader_address = SUCCESSOR  # the observer learns the successor

    status = await ended_status(call)
    assert status.code() == grpc.StatusCode.UNAVAILABLE
    assert f"lost the leadership; the leader is now {SUCCESSOR}" in (status.details() or "")
    assert dict(status.trailing_metadata() or ()).get(LEADER_METADATA) == SUCCESSOR


async def test_a_watch_whose_term_ends_as_its_job_is_touched_again_is_ended_once_quietly(
    leading: Leading, caplog: pytest.LogCaptureFixture
) -> None:
    calls = [leading.stub.WatchJob(client_pb2.WatchJobRequest(job_id="job-1")) for _ in range(3)]
    for call in calls:
        await call.read()

    with caplog.at_level(logging.WARNING):
        # In one loop turn: the term ends, and the next term restores the job and touches it,
        # which wakes the old term's watches together with the term's end.
        leading.end_term()
        leading.shell.scheduler.submit(
            "job-1", "", [TaskSpec("a", "echo", b"x")], leading.shell.clock()
        )
        leading.shell.flush()
        leading.gate.leader_address = SUCCESSOR
        statuses = [await ended_status(call) for call in calls]

    assert [s.code() for s in statuses] == [grpc.StatusCode.UNAVAILABLE] * 3
    assert all(
        dict(s.trailing_metadata() or ()).get(LEADER_METADATA) == SUCCESSOR for s in statuses
    )
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []  # was one "Abort already called!" traceback per watch
