"""A refusal reaches the client as INVALID_ARGUMENT with a short sentence, whatever was sent:
huge or unprintable names, a huge cycle, an out-of-range priority, bytes that are not protobuf
(issue #17, findings 5 and 6). A sentence cites at most a bounded prefix of the input: a status
message over gRPC's metadata limit never arrives (the client sees "Stream removed")."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from deerflow_bench import READY_PREFIX, Cluster
from deerflow_controller.client import AsyncClient, InvalidJobError, Task
from deerflow_controller.service.launcher import ManagedProcess, _env

CONTROLLER = str(Path(sys.executable).parent / "deerflow-controller")
SHORT = 400
"""The longest sentence a refusal may be here: a bounded prefix of the input, not all of it."""


async def _refusal(client: AsyncClient, tasks: list[Task], job_id: str = "", name: str = "") -> str:
    with pytest.raises(InvalidJobError) as info:
        await client.submit(tasks, job_id=job_id, name=name)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, info.value.message
    message = info.value.message
    assert len(message) < SHORT, message
    return message


async def test_a_100_kb_task_id_gets_the_sentence_not_stream_removed(
    controller_alone: Cluster,
) -> None:
    async with AsyncClient(controller_alone.address, timeout_s=30) as client:
        message = await _refusal(client, [Task("x" * 100_000, "echo")])
    assert "100000 bytes, over the limit of 256" in message
    assert "id 'xxxx" in message and "more characters" in message


async def test_a_3000_task_cycle_is_refused_in_one_short_sentence(
    controller_alone: Cluster,
) -> None:
    n = 3000
    tasks = [Task(f"s{i}", "echo", depends_on=[f"s{(i + 1) % n}"]) for i in range(n)]
    async with AsyncClient(controller_alone.address, timeout_s=30) as client:
        message = await _refusal(client, tasks)
    assert message.startswith("the dependencies form a cycle: 's")
    assert "(3000 tasks in all" in message


async def test_an_out_of_range_priority_is_invalid_argument(controller_alone: Cluster) -> None:
    async with AsyncClient(controller_alone.address, timeout_s=30) as client:
        for priority in (1_000_001, -(2**31)):
            message = await _refusal(client, [Task("urgent", "echo", priority=priority)])
            assert f"priority {priority}; use -1000000 to 1000000" in message
        accepted = await client.submit([Task("edge", "echo", priority=1_000_000)])
        assert accepted.job_id


NAME_CASES: list[tuple[str, list[Task], dict[str, str], str]] = [
    ("job id", [Task("a", "echo")], {"job_id": "j" * 300}, "job id 'jjj"),
    ("job name", [Task("a", "echo")], {"name": "n" * 5000}, "job name 'nnn"),
    ("handler", [Task("a", "h" * 257)], {}, "task 'a': handler 'hhh"),
    ("tenant", [Task("a", "echo", tenant="t" * 1_000_000)], {}, "task 'a': tenant 'ttt"),
    ("rate key", [Task("a", "echo", rate_keys=["k" * 300])], {}, "task 'a': rate key 'kkk"),
    ("label key", [Task("a", "echo", labels={"l" * 300: "v"})], {}, "task 'a': label key 'lll"),
    (
        "label value",
        [Task("a", "echo", labels={"gpu": "v" * 300})],
        {},
        "task 'a': value of label 'gpu' 'vvv",
    ),
]


async def test_over_long_names_of_each_kind_are_refused_naming_the_field_and_limit(
    controller_alone: Cluster,
) -> None:
    async with AsyncClient(controller_alone.address, timeout_s=30) as client:
        for case, tasks, kw, fragment in NAME_CASES:
            message = await _refusal(client, tasks, **kw)
            assert fragment in message, (case, message)
            assert "over the limit of" in message and "use a shorter" in message, (case, message)
        for field, tasks in (
            ("id", [Task("line\nbreak", "echo")]),
            ("handler", [Task("a", "echo\x00")]),
            ("tenant", [Task("a", "echo", tenant="bell\x07")]),
        ):
            message = await _refusal(client, tasks)
            assert f"{field} " in message and "unprintable character" in message, message
        # A name at the limit is fine.
        await client.submit([Task("i" * 256, "echo", tenant="t" * 256)])


@pytest.fixture
async def controller_with_log() -> AsyncIterator[tuple[str, ManagedProcess]]:
    """A controller whose stderr (its log, at WARNING) the test reads after stopping it."""
    proc = await asyncio.create_subprocess_exec(
        CONTROLLER, "--host", "127.0.0.1", "--port", "0", "--http-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(quiet=True),
    )  # fmt: skip
    controller = ManagedProcess(proc, "deerflow-controller")
    try:
        address = await controller._await_ready_line(READY_PREFIX, 30)
        yield address, controller
    finally:
        await controller.stop()


GARBAGE = b"\xff\xff\xff\xff\xff"  # a varint that never ends: no message parses from it
NOT_UTF8 = b"\x0a\x02\xff\xfe"  # well framed, but job_id (a string) is not UTF-8
SENTENCE = "not a valid {} message (its protobuf bytes do not parse)"


async def test_an_agent_hello_with_an_over_long_or_unprintable_name_is_refused(
    controller_alone: Cluster,
) -> None:
    from deerflow_protos import agent_pb2, agent_pb2_grpc

    def hello(agent_id: str, handler: str, labels: dict[str, str]) -> agent_pb2.AgentMessage:
        info = agent_pb2.HandlerInfo(name=handler)
        return agent_pb2.AgentMessage(
            hello=agent_pb2.Hello(agent_id=agent_id, slots=1, handlers=[info], labels=labels)
        )

    cases = [
        (hello("a" * 100_000, "echo", {}), "Hello's agent id 'aaa"),
        (hello("imp", "h" * 100_000, {}), "agent 'imp': handler name 'hhh"),
        (hello("imp", "echo\n", {}), "agent 'imp': handler name 'echo\\n' has an unprintable"),
        (hello("imp", "echo", {"k": "v" * 300}), "agent 'imp': value of label 'k'"),
    ]
    async with grpc.aio.insecure_channel(controller_alone.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        for message, fragment in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.Connect(iter([message]), timeout=30):
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = info.value.details() or ""
            assert fragment in details and len(details) < SHORT, details


async def test_garbage_bytes_get_invalid_argument_and_one_log_line_per_peer(
    controller_with_log: tuple[str, ManagedProcess],
) -> None:
    address, controller = controller_with_log
    async with grpc.aio.insecure_channel(address) as channel:
        # No serializers: the bytes go on the wire as they are.
        submit = channel.unary_unary("/deerflow.v1.JobService/SubmitJob")
        for i in range(50):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await submit(GARBAGE if i % 2 else NOT_UTF8, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert SENTENCE.format("SubmitJobRequest") in (info.value.details() or "")
        watch = channel.unary_stream("/deerflow.v1.JobService/WatchJob")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in watch(GARBAGE, timeout=30):
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert SENTENCE.format("WatchJobRequest") in (info.value.details() or "")
        connect = channel.stream_stream("/deerflow.v1.AgentService/Connect")
        call = connect(iter([GARBAGE]), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert SENTENCE.format("AgentMessage") in (info.value.details() or "")
        # The controller still serves well-formed calls.
        async with AsyncClient(address, timeout_s=30) as client:
            assert (await client.submit([Task("fine", "echo")])).job_id
    controller.signal(signal.SIGTERM)
    stderr = controller.proc.stderr
    assert stderr is not None
    log = (await asyncio.wait_for(stderr.read(), 30)).decode()
    assert "Traceback" not in log and "DecodeError" not in log, log
    lines = [line for line in log.splitlines() if "malformed" in line]
    assert len(lines) == 1, log
    assert "WARNING" in lines[0] and "ipv4:127.0.0.1" in lines[0]
