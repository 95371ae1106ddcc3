"""The opt-in ``python`` handler: runs a snippet in a limited, isolated interpreter, as an agent
runs it (HandlerEnvironment), with the real interpreter and the real kernel limits."""

from __future__ import annotations

import json
import os
import select
from typing import Any

import pytest

from deerflow_agent import ENTRY_POINT_GROUP, FatalError, HandlerEnvironment
from deerflow_dropins.handlers import python


async def run(code: str, *, wait_s: float = 10.0, **payload: Any) -> dict[str, Any]:
    output = await HandlerEnvironment().run(
        python, json.dumps({"code": code, **payload}).encode(), timeout_s=wait_s
    )
    result: dict[str, Any] = json.loads(output)
    return result


def test_the_handler_is_not_installed_by_default() -> None:
    from importlib.metadata import entry_points

    installed = {ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}

    assert not any(value.startswith("deerflow_dropins") for value in installed)
    assert "python" not in {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


async def test_a_snippet_prints_in_an_empty_directory_with_no_secrets_in_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEERFLOW_LLM_API_KEY", "sk-secret")
    result = await run(
        "import os, sys; print(sorted(os.environ), os.listdir('.'), sys.flags.isolated)"
    )

    assert result["stdout"] == "['HOME', 'LANG', 'PATH', 'TMPDIR'] ['.snippet.py'] 1\n"
    assert result["error"] is None and result["exit_code"] == 0 and not result["timed_out"]


async def test_an_exception_is_reported_as_its_repr_apart_from_what_was_printed() -> None:
    result = await run("print('before')\nraise ValueError('bad input')")

    assert result["stdout"] == "before\n"
    assert result["error"] == "ValueError('bad input')"


async def test_a_snippet_past_its_time_is_killed_with_its_children_and_keeps_its_output() -> None:
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )

    # 3 s: the snippet's interpreter must start and print its child's pid first (0.5 s was not
    # always enough on a loaded 2-core machine).
    result = await run(code, timeout_s=3.0)

    assert result["timed_out"] and result["error"].startswith("TimeoutError(")
    assert _exits_within(int(result["stdout"]), 5.0)  # the whole process group was killed
    assert result["duration_s"] < 8


def _exits_within(pid: int, timeout_s: float) -> bool:
    """Whether process ``pid`` has ended (or ends within ``timeout_s``): its pidfd turns
    readable when it exits, zombie or reaped."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout_s)
        return bool(readable)
    finally:
        os.close(pidfd)


async def test_output_is_kept_up_to_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEERFLOW_PYTHON_OUTPUT_KB", "1")

    result = await run("print('x' * 100_000)")

    assert result["stdout"] == "x" * 1024 and result["truncated"]


async def test_memory_file_size_and_cpu_are_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEERFLOW_PYTHON_MEMORY_MB", "256")
    monkeypatch.setenv("DEERFLOW_PYTHON_FILE_MB", "1")
    monkeypatch.setenv("DEERFLOW_PYTHON_CPU_S", "1")

    memory = await run("x = bytearray(512 << 20)")
    file = await run("open('f', 'wb').write(b'x' * (2 << 20))")
    cpu = await run("while True: pass")

    assert memory["error"] == "MemoryError()"
    assert file["error"] == "OSError(27, 'File too large')"
    assert cpu["error"].endswith("(SIGXCPU)") and not cpu["timed_out"]
    assert cpu["limits"]["cpu_s"] == 1


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"print(1)", "must be JSON"),
        (b'{"code": 1}', "'code' must be a string"),
        (b'{"code": "1", "timeout_s": -1}', "'timeout_s' must be a finite number > 0"),
    ],
)
async def test_a_bad_payload_fails_at_once_with_a_sentence(payload: bytes, message: str) -> None:
    with pytest.raises(FatalError, match=message):
        await HandlerEnvironment().run(python, payload)


async def test_a_malformed_limit_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEERFLOW_PYTHON_CPU_S", "lots")

    with pytest.raises(FatalError, match="DEERFLOW_PYTHON_CPU_S must be a number from 1 to 3600"):
        await run("print(1)")
