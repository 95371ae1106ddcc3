"""The drop-ins' shared connection presents ``$DEERFLOW_TOKEN`` (issue #17 item 2), as the CLI
does, to a controller that authenticates clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from deerflow_bench._launcher import ControllerProcess
from deerflow_controller.client import Task, TaskResult
from deerflow_dropins._cluster import close_all, connect
from tests.auth_files import Tokens, auth_toml, write_atomically


async def test_the_shared_connection_sends_the_token_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = Tokens()
    auth_file = tmp_path / "auth.toml"
    write_atomically(auth_file, auth_toml(tokens))
    controller = await ControllerProcess.start(
        ["--auth-file", str(auth_file), "--local-agents", "1", "--agent-slots", "2"]
    )
    try:
        monkeypatch.setenv("DEERFLOW_TOKEN", tokens.alice)
        connection = connect(controller.address)
        result: TaskResult = await connection.arun_task(Task("e", "echo", "hi"), name="t")
        assert result.ok and result.output == b"hi"
    finally:
        close_all()
        await controller.stop()
