"""A process forked after its parent opened a drop-in connection (a DeerFlow server's workers,
forked after a warm-up call, say) cannot use gRPC: the parent's connection has no thread there,
and a new one crashes in gRPC's poller. Every call refuses with one sentence instead; before,
the first call hung for good. The parent's connection is untouched."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from deerflow_controller.client import FORKED_AFTER_GRPC, Task
from deerflow_dropins._cluster import ClusterConnection, connect
from tests.forked import outcomes_in_a_forked_child

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
        outcomes = outcomes_in_a_forked_child(attempts)
        assert outcomes == [f"RuntimeError: {FORKED_AFTER_GRPC}"] * 3
        assert conn.in_own_loop() is False and not conn._closed  # the parent's is untouched
    finally:
        conn.close()
