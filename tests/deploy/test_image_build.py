"""The image's build stage, run here: its COPY lines lay out a build context in a temporary
directory and its `uv sync` RUN lines install from it, with the stage's ENV (uv.lock, --locked,
the pinned build backend), into a fresh environment whose console scripts then start. Differences
from a real build: this venv's uv (installed from the same hash-pinned bootstrap file) and
interpreter, and uv's cache and no byte-compiling, to keep the test fast."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._commands import DOCKERFILE, ROOT, dockerfile_instructions

BIN = Path(sys.executable).parent


def _build_stage() -> list[tuple[str, str]]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in dockerfile_instructions(DOCKERFILE.read_text()):
        if word == "FROM":
            stages.append([])
        if stages:  # ARGs before the first FROM belong to no stage
            stages[-1].append((word, rest))
    return stages[0]


@pytest.mark.timeout(300)
def test_the_build_stage_installs_from_the_lock_and_its_scripts_run(tmp_path: Path) -> None:
    if not (BIN / "uv").exists():
        pytest.skip("uv is not in the venv (make venv)")
    src, venv = tmp_path / "src", tmp_path / "venv"
    env = dict(os.environ)
    workdir = Path("/")
    uv_runs: list[list[str]] = []
    for word, rest in _build_stage():
        if word == "WORKDIR":
            workdir = Path(rest)
        elif word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
        elif word == "COPY":
            *sources, dest = shlex.split(rest)
            target = src / (workdir / dest).relative_to(workdir)
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(
                        origin,
                        target,
                        dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(
                            "__pycache__", "*.egg-info", "build", ".venv"
                        ),
                    )
                elif dest.endswith("/"):
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target)
        elif word == "RUN" and rest.startswith("/opt/uv/bin/uv "):
            uv_runs.append(shlex.split(rest))
    assert len(uv_runs) == 2 and all("--locked" in run for run in uv_runs)
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    env["UV_BUILD_CONSTRAINT"] = str(src / Path(env["UV_BUILD_CONSTRAINT"]).relative_to(workdir))
    env.pop("UV_NO_CACHE")
    env["UV_COMPILE_BYTECODE"] = "0"
    for run in uv_runs:
        argv = [
            str(BIN / "uv")
            if a == "/opt/uv/bin/uv"
            else a.replace("/usr/local/bin/python3", sys.executable)
            for a in run
        ]
        done = subprocess.run(
            argv, cwd=src, env=env, capture_output=True, text=True, timeout=240, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
    for script in ("deerflow-controller", "deerflow-agent", "deerflow"):
        done = subprocess.run(
            [str(venv / "bin" / script), "--help"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and "Usage:" in done.stdout, (script, done.stderr[-2000:])
    # The runtime needs only the product: no test or lint tools, no bench package.
    installed = {p.name.split("-")[0].lower() for p in venv.glob("lib/python*/site-packages/*")}
    assert "pytest" not in installed and "deerflow_bench" not in installed
    assert "deerflow_parallel" in installed
