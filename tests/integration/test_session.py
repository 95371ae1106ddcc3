"""JobService.Session (issue #19 item 2): many jobs over one client stream, each submit accepted
as a SubmitJob and its events sent as a WatchJob would, tagged with the request's call number.

The protocol is checked on a controller served in-process (its shell shows what was accepted,
and a leader gate makes it an HA leader whose term can end); the SDK's use of it, and its fall
back to SubmitJob and WatchJob when the stream breaks, on real controller and agent processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from deerflow_bench import Cluster
from deerflow_controller.client import (
    AsyncClient,
    Client,
    DeadlineExceededError,
    JobHandle,
    Task,
)
from deerflow_controller.client._session import SESSION_MAX_TASKS, SessionCall
from deerflow_controller.config import ControllerConfig
from deerflow_controller.core.model import TaskState
from deerflow_controller.core.scheduler import Scheduler
from deerflow_controller.ratelimit import RateLimiter
from deerflow_protos import client_pb2, client_pb2_grpc
from tests.tcp_proxy import Proxy

from .conftest import Served, connect, serve_in_process


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for s in serve_in_process(ControllerConfig()):
        yield s


@pytest.fixture
async def limited() -> AsyncIterator[Served]:
    """As ``served``, with three result streams allowed per client."""
    async for s in serve_in_process(ControllerConfig(max_watch_streams_per_client=3)):
        yield s


def submit(call: int, job_id: str, *task_ids: str, events: bool = False) -> Any:
    request = client_pb2.SessionRequest(
        call=call, filter=client_pb2.ALL if events else client_pb2.TERMINAL
    )
    request.submit.job_id = job_id
    for task_id in task_ids or ("a",):
        request.submit.tasks.add(id=task_id, handler="echo", payload=b"x")
    return request


def stop(call: int) -> Any:
    return client_pb2.SessionRequest(call=call, stop=client_pb2.SessionStop())


async def until(condition: Callable[[], bool], what: str) -> None:
    """Until ``condition()`` holds (polled, bounded)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never: {what}")


def one_sentence(details: str) -> None:
    assert details and "\n" not in details and "Traceback" not in details and len(details) < 300


async def test_a_refused_submit_ends_only_its_call(served: Served) -> None:
    stream = served.stub.Session()
    await stream.write(submit(1, "dup", "a", "a"))
    reply = await stream.read()
    assert reply.call == 1 and reply.HasField("end") and not reply.HasField("accepted")
    assert reply.end.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    one_sentence(reply.end.message)
    assert "'a'" in reply.end.message
    assert served.shell.job("dup") is None  # nothing accepted
    # The stream goes on: the next submit is accepted on it.
    await stream.write(submit(2, "good"))
    reply = await stream.read()
    assert reply.call == 2 and reply.accepted.job_id == "good" and reply.accepted.accepted == 1
    assert served.shell.job("good") is not None
    stream.cancel()


async def test_all_events_come_with_the_acknowledgement_and_a_done_job_ends_with_its_last(
    served: Served,
) -> None:
    stream = served.stub.Session()
    await stream.write(submit(7, "j", "a", "b", events=True))
    reply = await stream.read()
    # The job's first events (QUEUED: no agent here) travel with the acknowledgement.
    assert reply.call == 7 and reply.accepted.job_id == "j"
    assert [(e.task_id, e.state) for e in reply.events.events] == [
        ("a", TaskState.QUEUED),
        ("b", TaskState.QUEUED),
    ]
    assert not reply.HasField("end")
    assert served.shell.cancel("j", None, "test") == 2
    reply = await stream.read()
    # The job's last events and the call's end in one message.
    assert reply.call == 7 and [e.state for e in reply.events.events] == [TaskState.CANCELLED] * 2
    assert reply.HasField("end") and reply.end.code == 0
    # The call's place is given back; the stream keeps its own.
    await until(lambda: served.service.streams.total == 1, "the call's place given back")
    stream.cancel()


@pytest.mark.parametrize("second", [0, 1])
async def test_a_bad_call_number_ends_the_stream_and_accepted_jobs_run_on(
    served: Served, second: int
) -> None:
    stream = served.stub.Session()
    await stream.write(submit(1, "first"))
    assert (await stream.read()).accepted.job_id == "first"
    await stream.write(submit(second, "second"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    one_sentence(details)
    assert f"call number {second}" in details
    job = served.shell.job("first")
    assert job is not None and not job.done  # accepted before: runs on, not cancelled
    assert served.shell.job("second") is None
    await until(lambda: served.service.streams.total == 0, "the session's calls given back")


async def test_a_bad_call_number_during_a_calls_first_write_still_ends_with_its_status(
    controller_alone: Cluster,
) -> None:
    """The stream's status goes out after a write in flight, not across it: gRPC refused a
    status sent while a write was still in its core (TOO_MANY_OPERATIONS), and the client
    waited for good. The second submit reuses the first's number at once, so the refusal meets
    the first call's acknowledgement on its way. A race, so tried on many streams, against the
    real controller process (in-process here it never met: 23 of 30 streams hung there)."""
    async with grpc.aio.insecure_channel(controller_alone.address) as channel:
        stub = client_pb2_grpc.JobServiceStub(channel)
        for attempt in range(30):
            stream = stub.Session()
            await stream.write(submit(5, f"first{attempt}", events=True))
            await stream.write(submit(5, f"again{attempt}"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async with asyncio.timeout(30):  # a bound on a hang (it hung before the fix)
                    while await stream.read() is not grpc.aio.EOF:
                        pass
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
            assert "call number 5 is still in use" in (caught.value.details() or "")


async def test_a_request_without_submit_or_stop_ends_the_stream(served: Served) -> None:
    stream = served.stub.Session()
    await stream.write(client_pb2.SessionRequest(call=4))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    one_sentence(caught.value.details() or "")
    assert "neither a submit nor a stop" in (caught.value.details() or "")


async def test_the_stream_and_its_calls_count_against_the_limits_and_a_stop_gives_one_back(
    limited: Served,
) -> None:
    stream = limited.stub.Session()  # one of the client's three places
    for n in (1, 2):
        await stream.write(submit(n, f"j{n}"))
        assert (await stream.read()).accepted.job_id == f"j{n}"
    await stream.write(submit(3, "j3"))
    reply = await stream.read()
    assert reply.call == 3 and reply.end.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    one_sentence(reply.end.message)
    assert "--max-watch-streams-per-client 3" in reply.end.message
    assert limited.shell.job("j3") is None  # refused before anything was accepted
    # A stop ends the call's events (its job runs on) and gives its place back.
    await stream.write(stop(1))
    await until(lambda: limited.service.streams.total == 2, "call 1's place given back")
    job = limited.shell.job("j1")
    assert job is not None and not job.done
    await stream.write(submit(4, "j4"))
    assert (await stream.read()).accepted.job_id == "j4"
    # Idle streams are bounded too: with all three places held, another stream is refused.
    other = limited.stub.Session()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await other.read()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    one_sentence(caught.value.details() or "")
    stream.cancel()
    await until(lambda: limited.service.streams.total == 0, "every place given back")


async def test_in_ha_mode_the_stream_tells_its_epoch_and_ends_unavailable_with_the_term(
    served: Served,
) -> None:
    stream = served.stub.Session()
    await stream.write(submit(1, "j"))
    assert (await stream.read()).accepted.job_id == "j"
    assert dict(await stream.initial_metadata())["deerflow-epoch"] == "3"
    end_term(served)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    one_sentence(caught.value.details() or "")


def end_term(served: Served) -> None:
    """What the leadership loop does when this controller stops leading."""
    assert served.gate.term is not None
    served.gate.term.ended.set()
    served.gate.term = None
    config = served.shell.config
    served.shell.replace_scheduler(Scheduler(config.scheduler, limiter=RateLimiter(config.limits)))


async def test_an_idle_stream_ends_with_the_term_so_no_later_submit_reaches_a_standby(
    served: Served,
) -> None:
    """No call of it watches a job whose wake-up would end it: the term's end itself does."""
    stream = served.stub.Session()
    await stream.write(client_pb2.SessionRequest(call=1, stop=client_pb2.SessionStop()))
    assert dict(await stream.initial_metadata())["deerflow-epoch"] == "3"
    end_term(served)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(30):  # a bound on a hang (it hung before the fix)
            await stream.read()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    one_sentence(caught.value.details() or "")
    with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
        await stream.write(submit(2, "late"))
    assert served.shell.job("late") is None


# ------------------------------------------------------------------ the SDK, real processes


async def test_a_stop_that_cancels_the_job_follows_its_submit_and_cannot_overtake_it(
    served: Served,
) -> None:
    stream = served.stub.Session()
    # Both written before the controller reads either: the cancel still comes second.
    await stream.write(submit(1, "abandoned", "a", "b"))
    await stream.write(
        client_pb2.SessionRequest(call=1, stop=client_pb2.SessionStop(cancel_job=True))
    )
    states: list[int] = []
    while True:
        reply = await stream.read()
        assert reply.call == 1
        states += [e.state for e in reply.events.events]
        if reply.HasField("end"):
            break
    assert states == [TaskState.CANCELLED] * 2 and reply.end.code == 0
    job = served.shell.job("abandoned")
    assert job is not None and {t.state for t in job.tasks.values()} == {TaskState.CANCELLED}
    stream.cancel()


async def test_a_submit_abandoned_at_any_stage_leaves_no_job_waiting(served: Served) -> None:
    """``cancel_if_abandoned``: whenever the caller gives up, the job was never sent, or it is
    cancelled (no agent here: without the cancel it would wait QUEUED for ever)."""
    async with AsyncClient(served.gate.address, timeout_s=30) as client:
        await client.submit([Task("a", "echo")], job_id="first", watch="results")
        submits = [
            asyncio.ensure_future(
                client.submit(
                    [Task("a", "echo")],
                    job_id=f"gone{i}",
                    watch="results",
                    cancel_if_abandoned=True,
                )
            )
            for i in range(20)
        ]
        for turn in range(20):  # cancel them at every stage of their way out
            submits[turn].cancel()
            await asyncio.sleep(0)
        outcomes = await asyncio.gather(*submits, return_exceptions=True)
        # A submit answered before its cancel came is the caller's: not abandoned.
        abandoned = [f"gone{i}" for i, o in enumerate(outcomes) if not isinstance(o, JobHandle)]
        assert abandoned
        # The stream is ordered: once a later submit is answered, every earlier request was read.
        await client.submit([Task("a", "echo")], job_id="after", watch="results")
        for job_id in abandoned:
            await until(
                lambda: (j := served.shell.job(job_id)) is None or j.done,  # noqa: B023
                f"{job_id} cancelled or never sent",
            )
            job = served.shell.job(job_id)
            assert job is None or {t.state for t in job.tasks.values()} == {TaskState.CANCELLED}


async def test_callers_cancelled_during_their_submits_leave_the_stream_to_the_others(
    served: Served,
) -> None:
    """grpc.aio cancels a whole stream when one of its writes is cancelled: no caller's
    cancellation may reach a write, whenever it comes."""
    async with AsyncClient(served.gate.address, timeout_s=30) as client:
        await client.submit([Task("a", "echo")], job_id="first", watch="results")
        (session,) = client._sessions._open.values()
        submits = [
            asyncio.ensure_future(
                client.submit([Task("a", "echo")], job_id=f"j{i}", watch="results")
            )
            for i in range(40)
        ]
        for turn in range(40):  # cancel them at every stage of their way out
            submits[turn].cancel()
            await asyncio.sleep(0)
        await asyncio.gather(*submits, return_exceptions=True)
        job = await client.submit([Task("a", "echo")], job_id="after", watch="results")
        assert not session.broken and client._sessions._open[client.address] is session
        assert job._opened is not None and job._opened[1].session is session


async def test_the_sdk_gives_a_job_too_large_for_the_stream_a_watch_of_its_own(
    served: Served,
) -> None:
    """Its results are then paced to their reader by gRPC's flow control; the shared stream's
    reader takes every reply as it comes."""
    async with AsyncClient(served.gate.address, timeout_s=30) as client:
        for n, on_stream in ((SESSION_MAX_TASKS, True), (SESSION_MAX_TASKS + 1, False)):
            tasks = [Task(f"t{i}", "echo") for i in range(n)]
            job = await client.submit(tasks, job_id=f"size-{n}", watch="results")
            assert job.accepted == n and job._opened is not None
            assert isinstance(job._opened[1], SessionCall) is on_stream, n


async def test_the_sdk_sends_every_waiting_submit_over_one_stream(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, slots=4)
    await cluster.__aenter__()
    async with await connect(cluster) as client:
        results = await client.run([Task("a", "echo", b"1"), Task("b", "echo", b"2")])
        assert {k: r.output for k, r in results.items()} == {"a": b"1", "b": b"2"}
        results = await client.run([Task("c", "echo", b"3")], timeout_s=30)
        assert results["c"].ok
        job = await client.submit([Task("d", "echo", b"4")], watch="events")
        opened = job._opened
        assert opened is not None and isinstance(opened[1], SessionCall)
        states = [ev.state async for ev in job.events()]
        assert states[0] == "QUEUED" and states[-1] == "SUCCEEDED"
        assert opened[1].done()
        (session,) = client._sessions._open.values()
        assert opened[1].session is session and opened[1].number == 3 and not session.broken


async def test_the_blocking_client_reads_the_results_sent_with_its_submit(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, slots=4)
    await cluster.__aenter__()
    await (await connect(cluster)).close()

    def blocking() -> tuple[list[str], dict[str, bytes], bool]:
        with Client(cluster.address, timeout_s=30) as client:
            job = client.submit(
                [Task(f"t{i}", "echo", f"{i}".encode()) for i in range(5)], watch="results"
            )
            assert job._watched is not None and job._watched._opened is not None
            call = job._watched._opened[1]
            assert isinstance(call, SessionCall)
            streamed = sorted(r.task_id for r in job.results())
            waited = client.submit([Task("w", "echo", b"w")], watch="results").wait()
            return streamed, {k: r.output for k, r in waited.items()}, call.done()

    streamed, waited, done = await asyncio.to_thread(blocking)
    assert streamed == [f"t{i}" for i in range(5)] and waited == {"w": b"w"} and done


async def test_a_bounded_wait_on_the_stream_raises_deadline_and_the_job_runs_on(
    controller_alone: Cluster,
) -> None:
    async with AsyncClient(controller_alone.address, timeout_s=30) as client:
        with pytest.raises(DeadlineExceededError) as caught:
            await client.run([Task("a", "echo")], job_id="bounded", timeout_s=0.3)
        one_sentence(str(caught.value))
        status = await client.get_job("bounded")  # no agent: accepted, still waiting
        assert status.total == 1 and not status.done
        # The stream that carried it is still good for the next job.
        (session,) = client._sessions._open.values()
        job = await client.submit([Task("b", "echo")], watch="results")
        assert isinstance(job._opened and job._opened[1], SessionCall)
        assert client._sessions._open[client.address] is session and not session.broken


async def test_when_the_stream_breaks_the_sdk_resumes_and_delivers_each_result_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(1, slots=4)
    await cluster.__aenter__()
    await (await connect(cluster)).close()
    proxy = await Proxy(cluster.address).start()
    try:
        async with AsyncClient(proxy.address, timeout_s=30) as client:
            job = await client.submit(
                [Task("quick", "echo", b"q"), Task("slow", "sleep", {"seconds": 1.0})],
                watch="results",
            )
            opened = job._opened
            assert opened is not None and isinstance(opened[1], SessionCall)
            seen = []
            async for result in job.results():
                seen.append(result.task_id)
                if result.task_id == "quick":
                    await proxy.sever()  # the stream breaks with "slow" still running
            assert sorted(seen) == ["quick", "slow"]
            assert opened[1].session.broken
            # The next waiting submit opens a new stream.
            assert (await client.run([Task("c", "echo", b"c")]))["c"].output == b"c"
            assert not client._sessions._open[client.address].broken
    finally:
        await proxy.cut()
