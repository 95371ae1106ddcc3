"""``--config FILE`` (deerflow_common.config_file) on the daemons' real click commands: any flag by
its long name, precedence command line > environment > file > default, and refusals that name
the file, the key and what would be right. Parsed with ``make_context``/CliRunner: nothing is
started."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from deerflow_agent.main import main as agent_main
from deerflow_common.config_file import CONFIG_ENV, config_keys
from deerflow_controller.main import main as controller_main

DAEMONS = {"deerflow-controller": controller_main, "deerflow-agent": agent_main}


def params(command: click.Command, args: list[str]) -> dict[str, object]:
    with command.make_context("daemon", list(args)) as ctx:  # click consumes the list
        return dict(ctx.params)


def write(tmp_path: Path, text: str, name: str = "daemon.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refusal(command: click.Command, args: list[str], env: dict[str, str] | None = None) -> str:
    """The one error line the daemon prints for ``args``; fails unless it exits 2 at once."""
    result = CliRunner().invoke(command, args, env=env)
    assert result.exit_code == 2, result.output
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    return line


def test_any_controller_flag_is_given_by_its_long_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'agent-slot-limit = 4\ntuner = "on"\ntenant-weight = ["a=3", "b=1"]\nno-cache = true\n'
        "default-timeout = 30\n",
    )
    got = params(controller_main, ["--config", str(path)])
    assert got["agent_slot_limit"] == 4
    assert got["tuner_mode"] == "on"
    assert got["tenant_weights"] == ("a=3", "b=1")
    assert got["no_cache"] is True
    assert got["default_timeout"] == 30.0  # an integer is a number too
    assert got["port"] == 7400  # not in the file: the default


def test_any_agent_flag_is_given_by_its_long_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'controller = "10.0.0.1:7400,10.0.0.2:7400"\nslots = 7\nlabel = ["gpu=a100"]\n'
        'handler-slots = ["echo=2"]\nlog-level = "debug"\n',
    )
    got = params(agent_main, ["--config", str(path)])
    assert got["controllers"] == ("10.0.0.1:7400", "10.0.0.2:7400")  # through its callback
    assert got["slots"] == 7
    assert got["labels"] == {"gpu": "a100"}
    assert got["handler_slots"] == {"echo": 2}


def test_the_command_line_beats_the_environment_beats_the_file_beats_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'etcd = "file:2379"\nport = 7500\n')
    args = ["--config", str(path)]
    assert params(controller_main, args)["etcd"] == "file:2379"
    monkeypatch.setenv("DEERFLOW_ETCD", "env:2379")
    assert params(controller_main, args)["etcd"] == "env:2379"
    assert params(controller_main, [*args, "--etcd", "flag:2379"])["etcd"] == "flag:2379"
    assert params(controller_main, [*args, "--port", "0"])["port"] == 0
    assert params(controller_main, args)["port"] == 7500
    assert params(controller_main, [])["port"] == 7400


def test_deerflow_config_names_the_file_when_no_flag_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(write(tmp_path, "slots = 3\n")))
    assert params(agent_main, [])["slots"] == 3
    other = write(tmp_path, "slots = 5\n", "other.toml")
    assert params(agent_main, ["--config", str(other)])["slots"] == 5


def test_a_relative_path_in_the_file_is_read_from_the_files_folder(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "limits.toml").write_text("")
    path = write(tmp_path / "conf", 'limits = "limits.toml"\n')
    assert params(controller_main, ["--config", str(path)])["limits_path"] == (
        tmp_path / "conf" / "limits.toml"
    )


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_an_unknown_key_is_refused_naming_the_file_the_key_and_the_closest_one(
    daemon: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "lease_ttl = 4\n")
    line = refusal(DAEMONS[daemon], ["--config", str(path)])
    assert str(path) in line
    assert "unknown key 'lease_ttl'; did you mean 'lease-ttl'?" in line


def test_a_key_nothing_resembles_is_refused_saying_what_keys_are(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 1\n")
    line = refusal(controller_main, ["--config", str(path)])
    assert "unknown key 'server'" in line and "long flag names" in line


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('agent-slot-limit = "4"', "= '4' is a string; agent-slot-limit takes an integer"),
        ("default-timeout = true", "= True is a boolean; default-timeout takes a number"),
        ('no-cache = "yes"', "no-cache = 'yes' is a string; no-cache takes true or false"),
        ('tenant-weight = "a=1"', "= 'a=1' is a string; tenant-weight takes a list of strings"),
        ("host = 127", "host = 127 is an integer; host takes a string"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_key_and_the_type(
    text: str, said: str, tmp_path: Path
) -> None:
    line = refusal(controller_main, ["--config", str(write(tmp_path, text + "\n"))])
    assert said in line


def test_a_value_the_flag_refuses_is_refused_naming_the_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'agent-slot-limit = 100000\ntuner = "sometimes"\n')
    line = refusal(controller_main, ["--config", str(path)])
    assert f"{path}: agent-slot-limit = 100000:" in line and "4096" in line


def test_a_file_that_is_missing_or_not_toml_is_refused_in_one_line(tmp_path: Path) -> None:
    line = refusal(agent_main, ["--config", str(tmp_path / "nope.toml")])
    assert "cannot read" in line and "nope.toml" in line
    line = refusal(agent_main, ["--config", str(write(tmp_path, "slots = = 3\n"))])
    assert "is not TOML" in line


def test_the_env_named_file_is_checked_as_strictly(tmp_path: Path) -> None:
    path = write(tmp_path, "slotz = 3\n")
    line = refusal(agent_main, [], env={CONFIG_ENV: str(path)})
    assert "did you mean 'slots'?" in line


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_every_flag_of_a_daemon_has_a_key_and_takes_its_own_default_back(
    daemon: str, tmp_path: Path
) -> None:
    """A file that spells out every default parses to the defaults: no flag is unreachable, and
    each flag's key accepts the type of its own default."""
    command = DAEMONS[daemon]
    keys = config_keys(command)
    options = {p.name for p in command.params if isinstance(p, click.Option)} - {"config"}
    assert {o.name for o in keys.values()} == options
    defaults = params(command, [])
    lines = []
    for key, option in keys.items():
        value = option.default
        if not isinstance(value, bool | int | float | str | tuple | list):
            continue  # none, computed (--cpu-workers) or click's own "unset"
        if isinstance(value, tuple):
            value = list(value)
        lines.append(f"{key} = {_toml(value)}")
    assert params(command, ["--config", str(write(tmp_path, "\n".join(lines)))]) == defaults


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)
