"""The example plugin package (examples/handler-plugin, docs/HANDLERS.md) as a user installs it:
built from source with the locked setuptools and nothing fetched (pip --no-index
--no-build-isolation), installed into a folder on PYTHONPATH, found by a real agent through its
``deerflow.handlers`` entry points, and run in a job: a retry, inputs from dependencies, a cpu
handler and a payload refused in one sentence. Its own tests pass against the installed copy."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deerflow_controller.client import Task

from .conftest import ClusterFactory, connect

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "handler-plugin"


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package built from a copy of its source (the checkout stays clean) and
    installed into a folder for PYTHONPATH; once for this module's tests."""
    # The build backend the example names; in the dev environment through grpcio-tools (uv.lock).
    pytest.importorskip("setuptools", reason="building the example needs setuptools (make venv)")
    root = tmp_path_factory.mktemp("plugin")
    source = root / "handler-plugin"
    shutil.copytree(
        EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    site = root / "site"
    done = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
            "--no-build-isolation", "--disable-pip-version-check", "--target", str(site),
            str(source),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site / "deerflow_example_handlers" / "handlers.py").exists()
    return site


async def test_the_example_plugin_installed_from_source_runs_a_job_on_a_real_agent(
    installed: Path, make_cluster: ClusterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both daemons see it: agents run its handlers, the controller uses its merger on a split.
    monkeypatch.setenv("PYTHONPATH", str(installed))
    async with make_cluster(1) as cluster:
        client = await connect(cluster)
        try:
            (agent,) = await client.agents()
            assert {"wordcount", "tally", "digest"} <= set(agent.handlers)
            job = await client.submit(
                [
                    Task("count-a", "wordcount", {"texts": ["the cat sat", "the cat ran"]}),
                    Task(
                        "count-b",
                        "wordcount",
                        {"texts": ["a cat and a dog"], "available_from_attempt": 2},
                        max_retries=2,
                    ),
                    Task(
                        "tally",
                        "tally",
                        {"top": 2},
                        depends_on=["count-a", "count-b"],
                        inputs="all",
                    ),
                    Task("digest", "digest", b"abc"),
                    Task("bad", "wordcount", {"text": "no list"}),
                ]
            )
            results = await job.wait(timeout_s=60)
        finally:
            await client.close()
    assert results["count-b"].ok and results["count-b"].attempt == 2  # retried once
    assert json.loads(results["tally"].output) == {"top": [["cat", 3], ["a", 2]]}
    assert json.loads(results["digest"].output)["bytes"] == 3
    bad = results["bad"]
    assert not bad.ok
    assert bad.attempt == 1  # a FatalError is not retried
    assert 'payload field "texts" must be a list of strings' in bad.error


async def test_the_example_plugins_own_tests_pass_against_the_installed_copy(
    installed: Path,
) -> None:
    code, out = await _run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
        "-c", str(EXAMPLE / "pyproject.toml"), "--rootdir", str(EXAMPLE), str(EXAMPLE / "tests"),
        env={"PYTHONPATH": str(installed)},
    )  # fmt: skip
    assert code == 0, out
    assert " passed" in out
