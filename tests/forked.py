"""Run calls in a forked child and read back what each did: for the tests of what the SDK does
in a process forked after its parent used gRPC (it must refuse, not hang or crash)."""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable, Sequence

BOUND_S = 60.0
"""How long the parent waits for the child's report: a bound on a hang, not a synchronisation
(a child that hangs is reported as such)."""


def outcomes_in_a_forked_child(attempts: Sequence[Callable[[], object]]) -> list[str]:
    """Fork; in the child, call each attempt and report ``returned`` or ``Type: message``, then
    leave without cleanup; return the reports (one line: the child hung, when it did)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        outcomes = []
        for attempt in attempts:
            try:
                attempt()
                outcomes.append("returned")
            except BaseException as e:
                outcomes.append(f"{type(e).__name__}: {e}")
        os.write(write_end, "\n".join(outcomes).encode()[:8000])
        os._exit(0)
    os.close(write_end)
    ready: list[int] = []
    try:
        ready, _, _ = select.select([read_end], [], [], BOUND_S)
        report = os.read(read_end, 16000).decode() if ready else "no answer: the child hung"
    finally:
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_end)
    return report.split("\n")
