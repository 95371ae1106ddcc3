"""Closing the runtime ends its cpu process pool completely, so that the interpreter's exit has
nothing left to race."""

from __future__ import annotations

import threading
from concurrent.futures.process import _ExecutorManagerThread

from deerflow_agent import Attempt, Outcome, Runtime

from . import cpu_plugin


async def test_a_closed_runtime_leaves_no_process_pool_thread_for_the_exit_to_race() -> None:
    # Left running, the pool's manager thread closes its wakeup pipe while CPython's exit hook
    # (concurrent.futures.process._python_exit, before 3.12.8) writes to it without a lock:
    # "Exception ignored in: <module 'threading'> ... OSError: [Errno 9] Bad file descriptor"
    # at the end of `deerflow demo`, from an agent.
    outcomes: list[Outcome] = []
    runtime = Runtime(
        {cpu_plugin.burn.name: cpu_plugin.burn},
        slots=1,
        cpu_workers=2,
        on_started=lambda key, t: None,
        on_finished=outcomes.append,
    )
    runtime.submit([Attempt(("job", "task", 1), cpu_plugin.burn.name, b"x")])
    await runtime.wait_idle()
    assert outcomes[0].ok
    assert any(isinstance(t, _ExecutorManagerThread) for t in threading.enumerate())

    await runtime.aclose()

    assert not any(isinstance(t, _ExecutorManagerThread) for t in threading.enumerate())
