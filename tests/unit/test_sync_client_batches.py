"""The blocking client hands results and events across threads a WatchJob message at a time:
in order, each task id once, one crossing per message (not per item). The controller is a fake
WatchJob stub replaying fixed messages; crossings are counted at ``Client._call``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Generator, Iterator
from typing import Any, TypeVar

import pytest

from deerflow_controller.client import Client
from deerflow_protos import client_pb2, common_pb2

T = TypeVar("T")


def _event(
    task_id: str, seq: int, state: common_pb2.TaskState = common_pb2.SUCCEEDED
) -> common_pb2.TaskEvent:
    return common_pb2.TaskEvent(
        job_id="j", task_id=task_id, state=state, seq=seq, attempt=1, agent_id="a", output=b"x"
    )


# Three WatchJob messages; the last replays t1 (as a new leader's log does after a failover).
MESSAGES = [
    [_event(f"t{i}", i + 1) for i in range(50)],
    [
        _event("t50", 51, common_pb2.RUNNING),
        _event("t50", 52),
        _event("t51", 53, common_pb2.FAILED),
    ],
    [_event("t1", 1), _event("t52", 54)],
]


class FakeWatch:
    """What ``JobServiceStub.WatchJob`` returns: initial metadata, then the messages."""

    def __init__(self, terminal_only: bool) -> None:
        self.terminal_only = terminal_only

    async def initial_metadata(self) -> tuple[()]:
        return ()

    def __aiter__(self) -> AsyncIterator[common_pb2.TaskEventBatch]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[common_pb2.TaskEventBatch]:
        for message in MESSAGES:
            events = [e for e in message if e.state != common_pb2.RUNNING or not self.terminal_only]
            yield common_pb2.TaskEventBatch(events=events)

    def cancel(self) -> bool:
        return True


class FakeStub:
    def WatchJob(self, request: Any, **_: Any) -> FakeWatch:
        return FakeWatch(request.filter == client_pb2.TERMINAL)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Client, list[int]]]:
    with Client("127.0.0.1:1", timeout_s=5) as c:
        crossings = [0]
        real_call = c._call

        def counting_call(coro: Coroutine[Any, Any, T]) -> T:
            crossings[0] += 1
            return real_call(coro)

        monkeypatch.setattr(c._async, "_jobs", FakeStub())
        monkeypatch.setattr(c, "_call", counting_call)
        yield c, crossings


def test_results_in_order_exactly_once_one_crossing_per_message(
    client: tuple[Client, list[int]],
) -> None:
    c, crossings = client
    ids = [r.task_id for r in c.results("j")]
    assert ids == [f"t{i}" for i in range(53)]
    # One crossing per message that carried a new result, one for the end, one for aclose.
    assert crossings[0] <= len(MESSAGES) + 2


def test_events_in_order_one_crossing_per_message(client: tuple[Client, list[int]]) -> None:
    c, crossings = client
    seqs = [ev.seq for ev in c.events("j")]
    assert seqs == [ev.seq for m in MESSAGES for ev in m]
    assert crossings[0] <= len(MESSAGES) + 2


def test_wait_keys_every_task_once(client: tuple[Client, list[int]]) -> None:
    c, crossings = client
    results = c.wait("j")
    assert list(results) == [f"t{i}" for i in range(53)]
    assert results["t51"].state == "FAILED"
    assert crossings[0] == 1


def test_breaking_out_early_closes_the_stream(client: tuple[Client, list[int]]) -> None:
    c, _ = client
    it = c.results("j")
    assert next(it).task_id == "t0"
    assert isinstance(it, Generator)
    it.close()  # aclose on the loop; no thread or generator left behind
