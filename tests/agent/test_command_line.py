"""The real ``deerflow-agent`` entry point: what a person typed wrong gets one line on stderr
naming the fix, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deerflow_controller.launcher import _env

AGENT = str(Path(sys.executable).parent / "deerflow-agent")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port this test holds (listening) until it ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_a_taken_metrics_port_is_one_line_naming_the_port_and_the_flag(taken_port: int) -> None:
    # No controller listens there: the agent must give up on the port before it connects.
    done = subprocess.run(
        [AGENT, "--controller", "127.0.0.1:9", "--metrics-port", str(taken_port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(quiet=True),
    )
    assert done.stderr.splitlines() == [
        f"deerflow-agent: cannot serve metrics on 127.0.0.1:{taken_port} "
        "(Address already in use); pass another --metrics-port (0 turns it off)"
    ]
    assert done.returncode == 1
