"""``deerflow sim`` / ``python -m deerflow_simulator``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
from click.testing import CliRunner

import deerflow_simulator
from deerflow_simulator import KeyLimits
from deerflow_simulator.cli import DEFAULT_KEY, build_config, sim

READY = "deerflow-sim listening on "
PACKAGE_ROOT = str(Path(deerflow_simulator.__file__).resolve().parents[1])


async def test_the_command_serves_until_sigterm(http: aiohttp.ClientSession) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "deerflow_simulator", "--port", "0", "--time-scale", "0",
        "--key", "k=rpm:600,concurrency:4",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode()
        assert line.startswith(READY), line
        url = line[len(READY) :].strip()
        assert url.startswith("http://127.0.0.1:")
        async with http.get(f"{url}/stats") as response:
            assert list((await response.json())["keys"]) == ["k"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_a_bad_key_spec_is_a_usage_error() -> None:
    result = CliRunner().invoke(sim, ["--key", "k=rpm:fast"])
    assert result.exit_code == 2
    assert "rpm 'fast' is not a number" in result.output


def test_a_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(sim, ["--config", str(tmp_path / "absent.json")])
    assert result.exit_code == 2
    assert "cannot read simulator config" in result.output


def test_key_specs_add_to_the_config_files_keys_and_options_override_it(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    path.write_text(json.dumps({"keys": {"a": {"rpm": 60}}, "time_scale": 0.5, "seed": 3}))
    config = build_config(path, ("b=tpm:1000", "a=rpm:120"), time_scale=0.1, seed=None)
    assert config.keys == {"a": KeyLimits(rpm=120), "b": KeyLimits(tpm=1000)}
    assert (config.time_scale, config.seed) == (0.1, 3)


def test_without_keys_the_default_key_is_served() -> None:
    assert build_config(None).keys == dict([DEFAULT_KEY])
