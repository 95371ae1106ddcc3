"""A process forked after its parent opened a drop-in connection (a DeerFlow server's workers,
forked after a warm-up call, say) cannot use gRPC: the parent's connection has no thread there,
and a new one crashes in gRPC's poller. Every call refuses with one sentence instead; before,
the first call hung for good. The parent's connection is untouched."""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable

import pytest

from deerflow_controller.client import FORKED_AFTER_GRPC, Task
from deerflow_dropins._cluster import ClusterConnection, connect

BOUND_S = 60.0
"""How long the parent waits for the child's report: a bound on a hang, not a synchronisation."""

ADDRESS = "127.0.0.1:2"  # nothing listens: the calls must fail before they would connect


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_drop_in_calls_in_a_forked_child_refuse_with_a_sentence_instead_of_hanging() -> None:
    conn = connect(ADDRESS)
    try:
        attempts: list[Callable[[], object]] = [
            lambda: conn.run_task(Task("t", "echo", b"x"), timeout_s=5),  # the parent's
            lambda: connect(ADDRESS).run_task(Task("t", "echo", b"x"), timeout_s=5),  # shared
            lambda: ClusterConnection(ADDRESS),  # a new one
        ]
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what each call did, then leave without cleanup
            outcomes = []
            for attempt in attempts:
                try:
                    attempt()
                    outcomes.append("returned")
                except BaseException as e:
                    outcomes.append(f"{type(e).__name__}: {e}")
            os.write(write_end, "\n".join(outcomes).encode()[:4000])
            os._exit(0)
        os.close(write_end)
        ready: list[int] = []
        try:
            ready, _, _ = select.select([read_end], [], [], BOUND_S)
            report = os.read(read_end, 8000).decode() if ready else "no answer: the child hung"
        finally:
            if not ready:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_end)
        assert report.split("\n") == [f"RuntimeError: {FORKED_AFTER_GRPC}"] * 3
        assert conn.in_own_loop() is False and not conn._closed  # the parent's is untouched
    finally:
        conn.close()
