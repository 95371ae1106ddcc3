"""``python -m deerflow_agent._prestart``: an agent started before its controller listens.

A controller's ``--local-agents`` are spawned first thing, so that their imports run while the
controller imports its own (two cores instead of one after the other). Such a process imports
the agent, then blocks reading one JSON line on stdin, ``{"args": [...], "env": {...}}``: the
command line and the environment additions of ``deerflow-agent``, which the controller knows
only once it listens. From there it is ``deerflow-agent`` with those arguments, in this
process. Stdin closing first (the controller exited, or failed to start) ends the process
quietly with status 0; SIGINT meanwhile ends it without a traceback."""

from __future__ import annotations

import json
import os
import signal
import sys

# Until the hand-over, SIGINT ends this process without a traceback: Ctrl-C reaches the whole
# process group, and the agent it would become has not started.
signal.signal(signal.SIGINT, signal.SIG_DFL)

# What the agent would import anyway, imported now while the controller starts: the daemon and
# the built-in handlers its entry points name.
from deerflow_agent import builtins, providers  # noqa: E402, F401
from deerflow_agent.main import main as agent_main  # noqa: E402


def _read_hand_over() -> tuple[list[str], dict[str, str]] | None:
    """The arguments and environment from stdin; None when it closed first. Blocks."""
    line = sys.stdin.readline()
    if not line:
        return None
    message = json.loads(line)
    args = [str(a) for a in message["args"]]
    env = {str(k): str(v) for k, v in message.get("env", {}).items()}
    return args, env


def main() -> None:
    hand_over = _read_hand_over()
    if hand_over is None:
        sys.exit(0)
    args, env = hand_over
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.update(env)
    # Nothing more comes on stdin, and the agent reads none: /dev/null in its place.
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    agent_main(args=args, prog_name="deerflow-agent")


if __name__ == "__main__":
    main()
