"""The blocking client's thread crossing (``Client._call``): calls from many threads queued while
the loop is busy start in one wake-up of the loop; ``run`` is submit and wait in one crossing;
closing the client ends the calls still in flight instead of leaving their threads blocked.
The controller is a fake stub; nothing here waits on time except bounds on thread joins."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pytest

from deerflow_controller.client import FORKED_AFTER_GRPC, Client, DeerflowError, Task, _sync
from deerflow_protos import client_pb2, common_pb2
from tests.forked import outcomes_in_a_forked_child

T = TypeVar("T")

JOIN_BOUND_S = 60.0
"""How long a test waits for a thread it expects to end at once: a bound on a hang, not a
synchronisation (every wait below ends on an event, this only stops a broken build hanging)."""


class FakeWatch:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    async def initial_metadata(self) -> tuple[()]:
        return ()

    async def _messages(self) -> Any:
        yield common_pb2.TaskEventBatch(
            events=[
                common_pb2.TaskEvent(
                    job_id=self.job_id, task_id=t, state=common_pb2.SUCCEEDED, seq=i
                )
                for i, t in enumerate(("a", "b"), start=1)
            ]
        )

    def __aiter__(self) -> Any:
        return self._messages()

    def cancel(self) -> bool:
        return True


class FakeJobs:
    """A controller that predates Session. SubmitJob accepts anything; WatchJob replays both
    tasks succeeding; GetJob never answers (it sets ``entered`` first, so a test knows the call
    is in flight on the loop)."""

    def __init__(self) -> None:
        self.entered = threading.Event()

    async def SubmitJob(self, request: client_pb2.SubmitJobRequest, **_: Any) -> Any:
        return client_pb2.SubmitJobResponse(job_id=request.job_id, accepted=len(request.tasks))

    def WatchJob(self, request: client_pb2.WatchJobRequest, **_: Any) -> FakeWatch:
        return FakeWatch(request.job_id)

    async def GetJob(self, request: Any, **_: Any) -> Any:
        self.entered.set()
        await asyncio.Event().wait()


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Client, FakeJobs, list[int]]]:
    with Client("127.0.0.1:1", timeout_s=5) as c:
        crossings = [0]
        real_call = c._call

        def counting_call(coro: Coroutine[Any, Any, T]) -> T:
            crossings[0] += 1
            return real_call(coro)

        jobs = FakeJobs()
        monkeypatch.setattr(c._async, "_jobs", jobs)
        # A controller without Session (the fake serves SubmitJob and WatchJob only).
        c._async._sessions._unserved.add(c._async.address)
        monkeypatch.setattr(c, "_call", counting_call)
        yield c, jobs, crossings


def test_run_submits_and_waits_in_one_thread_crossing(
    client: tuple[Client, FakeJobs, list[int]],
) -> None:
    c, _, crossings = client
    results = c.run([Task("a", "echo", b"1"), Task("b", "echo", b"2")])
    assert sorted(results) == ["a", "b"]
    assert all(r.ok for r in results.values())
    assert crossings[0] == 1


def test_submit_then_wait_still_works_in_two_crossings(
    client: tuple[Client, FakeJobs, list[int]],
) -> None:
    c, _, crossings = client
    job = c.submit([Task("a", "echo", b"1"), Task("b", "echo", b"2")])
    assert job.accepted == 2
    assert sorted(job.wait()) == ["a", "b"]
    assert crossings[0] == 2


def test_calls_queued_while_the_loop_is_busy_start_in_one_wake_up() -> None:
    with Client("127.0.0.1:1", timeout_s=5) as c:
        lt = c._loop_thread
        wake_ups = [0]
        real_start = lt._start_pending

        def counting_start() -> None:
            wake_ups[0] += 1
            real_start()

        lt._start_pending = counting_start  # type: ignore[method-assign]
        busy, release = threading.Event(), threading.Event()

        async def hold_the_loop() -> None:
            busy.set()
            release.wait()  # blocks the loop thread itself: nothing else runs on it meanwhile

        async def answer(i: int) -> int:
            return i

        holder = threading.Thread(target=c._call, args=(hold_the_loop(),))
        holder.start()
        assert busy.wait(JOIN_BOUND_S)
        before = wake_ups[0]
        calls: list[_sync._Call[int]] = [_sync._Call(answer(i)) for i in range(20)]
        with lt._lock:
            for call in calls:
                lt._queue(call)
        release.set()
        assert [lt._outcome(call) for call in calls] == list(range(20))
        holder.join(JOIN_BOUND_S)
        assert wake_ups[0] - before == 1


def test_many_threads_each_get_their_own_answer() -> None:
    async def echo(i: int) -> int:
        await asyncio.sleep(0)  # one loop turn: calls from several threads interleave
        return i

    with Client("127.0.0.1:1", timeout_s=5) as c:
        answers: dict[int, list[int]] = {}

        def caller(t: int) -> None:
            answers[t] = [c._call(echo(t * 1000 + k)) for k in range(200)]

        threads = [threading.Thread(target=caller, args=(t,)) for t in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(JOIN_BOUND_S)
    assert answers == {t: [t * 1000 + k for k in range(200)] for t in range(16)}


def test_an_error_on_the_loop_reaches_the_calling_thread_as_raised() -> None:
    async def refuse() -> None:
        raise DeerflowError("refused", grpc.StatusCode.INVALID_ARGUMENT)

    with Client("127.0.0.1:1", timeout_s=5) as c, pytest.raises(DeerflowError) as info:
        c._call(refuse())
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_closing_the_client_ends_a_call_in_flight_with_cancelled(
    client: tuple[Client, FakeJobs, list[int]],
) -> None:
    c, jobs, _ = client
    outcome: list[BaseException] = []

    def caller() -> None:
        try:
            c.get_job("j")
        except BaseException as e:
            outcome.append(e)

    th = threading.Thread(target=caller, daemon=True)  # old code left it blocked for good
    th.start()
    assert jobs.entered.wait(JOIN_BOUND_S)
    c.close()
    th.join(JOIN_BOUND_S)
    assert not th.is_alive(), "the caller was left blocked after close()"
    assert isinstance(outcome[0], DeerflowError)
    assert outcome[0].code == grpc.StatusCode.CANCELLED
    assert "closed" in outcome[0].message


def test_a_call_after_close_is_refused_with_a_sentence() -> None:
    c = Client("127.0.0.1:1", timeout_s=5)
    c.close()
    c.close()  # idempotent
    with pytest.raises(RuntimeError, match="create a new Client"):
        c.stats()


def test_a_coroutine_cancelled_on_its_own_reports_cancelled_as_before() -> None:
    async def cancelled() -> None:
        raise asyncio.CancelledError

    with Client("127.0.0.1:1", timeout_s=5) as c, pytest.raises(concurrent.futures.CancelledError):
        c._call(cancelled())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_client_used_in_a_forked_child_refuses_with_a_sentence_instead_of_hanging() -> None:
    with Client("127.0.0.1:1", timeout_s=5) as c:
        outcomes = outcomes_in_a_forked_child([c.stats, lambda: Client("127.0.0.1:1", timeout_s=5)])
        assert c._call(_answer(7)) == 7  # the parent's client is untouched
    # The parent's client there, and a new one (gRPC crashed it: SIGSEGV), refuse alike.
    assert outcomes == [f"RuntimeError: {FORKED_AFTER_GRPC}"] * 2


async def _answer(i: int) -> int:
    return i
