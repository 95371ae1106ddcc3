"""Slow readers (issue #17, deliver 4): WatchJob streams opened and never read, against a running
controller with a real agent and good jobs flowing. The controller never hangs (good jobs keep
completing, other calls answer), a stream read at last delivers every task's terminal event once,
and its memory stays within the suite's bound."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from deerflow_controller.client import Client, Task
from deerflow_protos import client_pb2, common_pb2

from . import calls
from .calls import JOBS
from .conftest import InputCount
from .target import FuzzTarget

WATCH_S = 3.0
"""How long the unread streams are watched (on main they grew the controller 340 MB within 1 s)."""

UNREAD_STREAMS_BOUND_BYTES = 96 << 20
"""What 40 unread streams of a 4 MB job (its events replayed to each: 160 MB if each stream
buffered all of it) may add to the controller's memory, the job itself included: the streams'
shared buffer (`--watch-buffer-bytes`, 16 MiB) and about 85 KB per stream, the job's payloads,
outputs and events (about 12 MB), and the allocator's arenas, which do not shrink (measured
after the stream limits: 66 MiB on a loaded machine; before them: 180-400 MB)."""

TERMINAL = {common_pb2.SUCCEEDED, common_pb2.FAILED, common_pb2.CANCELLED, common_pb2.TIMED_OUT}


def _unread_watches(ch: grpc.Channel, job_id: str, n: int) -> list[Iterator[bytes]]:
    """``n`` WatchJob streams of ``job_id`` (all events from the start), none read yet."""
    body = client_pb2.WatchJobRequest(job_id=job_id).SerializeToString()
    return [ch.unary_stream(JOBS + "WatchJob")(body, timeout=60) for _ in range(n)]


def test_unread_watch_streams_do_not_stop_good_jobs_and_deliver_everything_when_read(
    target: FuzzTarget, inputs: InputCount
) -> None:
    tasks = [Task(f"t{i}", "echo", f"payload {i}".encode()) for i in range(200)]
    with calls.channel(target.address) as ch, Client(target.address, timeout_s=30) as client:
        # Watchers that attach before the job runs (events pushed as they happen) and after.
        job = client.submit(tasks)
        early = _unread_watches(ch, job.job_id, 20)
        client.wait(job.job_id, timeout_s=30)
        late = _unread_watches(ch, job.job_id, 20)
        inputs.n += 40
        target.check_serving()
        assert calls.unary(ch, JOBS + "GetJob", _get(job.job_id)).code == grpc.StatusCode.OK
        for stream in early + late:
            ends: Counter[str] = Counter()
            for reply in stream:
                for ev in common_pb2.TaskEventBatch.FromString(reply).events:
                    if ev.state in TERMINAL:
                        ends[ev.task_id] += 1
                        assert ev.output == f"payload {ev.task_id[1:]}".encode()
            assert ends == Counter({t.id: 1 for t in tasks})
    target.check()


def _get(job_id: str) -> bytes:
    return client_pb2.GetJobRequest(job_id=job_id).SerializeToString()


@pytest.fixture
def own_target(tmp_path: Path) -> Iterator[FuzzTarget]:
    """A controller of this test's own: its memory is what the test measures."""
    fuzz = FuzzTarget(tmp_path)
    try:
        fuzz.start()
        yield fuzz
    finally:
        fuzz.stop()


def test_unread_watch_streams_keep_the_controller_within_its_memory_bound(
    own_target: FuzzTarget, inputs: InputCount
) -> None:
    tasks = [Task(f"t{i}", "echo", b"x" * 8192) for i in range(500)]
    with calls.channel(own_target.address) as ch, Client(own_target.address) as client:
        before = own_target.rss()
        job = client.submit(tasks)
        streams = _unread_watches(ch, job.job_id, 40)
        inputs.n += 40
        client.wait(job.job_id, timeout_s=60)
        try:
            # One more stream, read to its end: the controller has then written the whole job
            # to it, and (nothing holding it back) as much to each unread one. Then watch a
            # few seconds more, each turn a good job submitted then completing and the RSS
            # within the suite's bound.
            for _ in _unread_watches(ch, job.job_id, 1)[0]:
                own_target.rss()
            end = time.monotonic() + WATCH_S
            while time.monotonic() < end:
                own_target.check_serving()
            grown = own_target.peak_rss - before
            assert grown <= UNREAD_STREAMS_BOUND_BYTES, f"grew {grown >> 20} MiB"
        finally:
            for stream in streams:
                stream.cancel()  # type: ignore[attr-defined]
