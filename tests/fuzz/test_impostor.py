"""Fuzzing AgentService as an impostor would (issue #17, deliver 4): raw agent streams with a
random Hello (or none), then random and forged messages: heartbeats with NaN and infinite
loads, results and starts for attempts the impostor was never given, progress, draining, and
FetchInput for inputs it has no right to; against one running controller with a real agent, good
jobs flowing and the dashboard's HTTP side on.

Properties, besides those of every fuzz example (an allowed status within the deadline, the
same live process within its RSS bound, no traceback): while an impostor's stream is open the
admin calls and the dashboard's /api/stats and /metrics still answer; and a forged result for a
task that has ended never changes it."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deerflow_controller.client import Client, Task
from deerflow_protos import admin_pb2, agent_pb2, client_pb2

from . import calls
from .calls import ADMIN, AGENTS, JOBS
from .conftest import InputCount, running_target
from .strategies import agent_messages, fetch_requests, hellos, int32s, refs
from .target import AGENT_ID, ALLOWED_CODES, FuzzTarget

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,  # `inputs` counts across the examples on purpose
    ],
)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    yield from running_target(tmp_path_factory, http=True)


@pytest.fixture(scope="module")
def ch(target: FuzzTarget) -> Iterator[grpc.Channel]:
    with calls.channel(target.address) as channel:
        yield channel


def _http_ok(target: FuzzTarget, path: str) -> None:
    url = f"http://127.0.0.1:{target.http_port}{path}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200, (path, reply.status)
        reply.read()


def _looks_around(target: FuzzTarget, ch: grpc.Channel) -> Iterator[bytes]:
    """Sent last on the impostor's stream (it runs in gRPC's sending thread, while the stream
    is open): nothing to send, but the admin calls and the dashboard must answer."""
    calls.unary(ch, ADMIN + "GetStats", admin_pb2.GetStatsRequest().SerializeToString())
    calls.unary(ch, ADMIN + "ListAgents", admin_pb2.ListAgentsRequest().SerializeToString())
    _http_ok(target, "/api/stats")
    _http_ok(target, "/metrics")
    yield from ()


forged = st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("abc"), int32s), max_size=4)
"""Results to forge: (which finished good job, which of its tasks, which attempt)."""


@settings(FUZZ, max_examples=100)
@given(
    first=st.one_of(hellos.map(lambda h: agent_pb2.AgentMessage(hello=h)), agent_messages(refs)),
    rest=st.lists(agent_messages(refs), max_size=6),
    forge=forged,
)
def test_an_impostor_agent_stream_gets_a_status_and_changes_no_finished_task(
    target: FuzzTarget,
    ch: grpc.Channel,
    inputs: InputCount,
    first: agent_pb2.AgentMessage,
    rest: list[agent_pb2.AgentMessage],
    forge: list[tuple[int, str, int]],
) -> None:
    forged_refs = [
        agent_pb2.AttemptRef(job_id=target.done_job(pick), task_id=task, attempt=attempt)
        for pick, task, attempt in forge
    ]
    results = agent_pb2.ResultBatch(
        results=[agent_pb2.Result(ref=r, ok=True, output=b"forged") for r in forged_refs]
    )
    messages = [first, *rest, agent_pb2.AgentMessage(results=results)]

    def stream() -> Iterator[bytes]:
        for m in messages:
            yield m.SerializeToString()
        yield from _looks_around(target, ch)

    calls.bidi_stream(ch, AGENTS + "Connect", stream())
    inputs.n += 1
    for ref in forged_refs:
        if not ref.job_id.startswith("probe-"):
            continue
        request = client_pb2.GetTaskRequest(job_id=ref.job_id, task_id=ref.task_id)
        answer = calls.unary(ch, JOBS + "GetTask", request.SerializeToString())
        status = client_pb2.TaskStatus.FromString(answer.replies[0])
        n = ref.job_id.split("-")[1]
        assert status.output == f"probe {n} {ref.task_id}".encode(), status
    target.check()


@settings(FUZZ, max_examples=60)
@given(request=fetch_requests)
def test_fetching_an_input_without_an_attempt_gets_a_status(
    target: FuzzTarget,
    ch: grpc.Channel,
    inputs: InputCount,
    request: agent_pb2.FetchInputRequest,
) -> None:
    calls.server_stream(ch, AGENTS + "FetchInput", request.SerializeToString())
    inputs.n += 1
    target.check()


def test_an_impostor_cannot_end_another_agents_running_attempt(
    target: FuzzTarget, ch: grpc.Channel
) -> None:
    with Client(target.address, timeout_s=30) as client:
        job = client.submit([Task("long", "sleep", {"seconds": 1.0})])
        running = next(
            ev
            for ev in client.events(job.job_id, timeout_s=30)
            if ev.state == "RUNNING" or ev.terminal
        )
        assert running.state == "RUNNING" and running.agent_id == AGENT_ID, running
        ref = agent_pb2.AttemptRef(job_id=job.job_id, task_id="long", attempt=running.attempt)
        hello = agent_pb2.Hello(
            agent_id="impostor", slots=1, handlers=[agent_pb2.HandlerInfo(name="nope")]
        )
        result = agent_pb2.Result(ref=ref, ok=True, output=b"forged")
        messages = [
            agent_pb2.AgentMessage(hello=hello),
            agent_pb2.AgentMessage(results=agent_pb2.ResultBatch(results=[result])),
        ]
        calls.bidi_stream(ch, AGENTS + "Connect", (m.SerializeToString() for m in messages))
        ended = client.result(job.job_id, "long", timeout_s=30)
    target.check()
    assert ended.output == b'{"slept": 1.0}', ended


@pytest.fixture
def own_target(tmp_path: Path) -> Iterator[FuzzTarget]:
    """A controller of this test's own: the impostor changes what every echo task does."""
    fuzz = FuzzTarget(tmp_path)
    try:
        fuzz.start()
        yield fuzz
    finally:
        fuzz.stop()


def test_an_impostors_handler_traits_do_not_change_a_handler_other_agents_serve(
    own_target: FuzzTarget,
) -> None:
    echo = agent_pb2.HandlerInfo(name="echo", items_field="items")
    hello = agent_pb2.Hello(agent_id="impostor", slots=1, handlers=[echo])
    leave = threading.Event()

    def stream() -> Iterator[bytes]:
        yield agent_pb2.AgentMessage(hello=hello).SerializeToString()
        leave.wait(30)

    with calls.channel(own_target.address) as ch, Client(own_target.address) as client:
        call = ch.stream_stream(AGENTS + "Connect")(stream(), timeout=30)
        try:
            # Welcome (joined: its traits must then be the ones the others serve), or the
            # stream's end with a refusal (FAILED_PRECONDITION: other traits for echo).
            welcome = agent_pb2.ControllerMessage.FromString(next(call))
            assert welcome.WhichOneof("msg") == "welcome"
            client.agents(wait_for=2, timeout_s=30)
        except grpc.RpcError as e:
            assert e.code() in ALLOWED_CODES, e
        try:
            job = client.submit([Task("plain", "echo", b"not JSON, never split")])
            ended = client.result(job.job_id, "plain", timeout_s=30)
        finally:
            leave.set()
            call.cancel()
    assert ended.state == "SUCCEEDED" and ended.output == b"not JSON, never split", ended
