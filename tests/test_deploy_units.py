"""The systemd units in deploy/ run the daemons as the code defines them: every flag they pass is
one the daemon's parser accepts (checked by parsing the command line with it), and together they
describe the HA deployment deploy/README.md promises."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import click
import pytest

from deerflow_agent.main import main as agent_main
from deerflow_common.config_file import config_keys
from deerflow_controller.config import SchedulerConfig
from deerflow_controller.main import main as controller_main

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
ENV_EXAMPLE = DEPLOY / "deerflow.env.example"
DAEMONS: dict[str, click.Command] = {
    "deerflow-controller": controller_main,
    "deerflow-agent": agent_main,
}
SPECIFIERS = {"%H": "host-1", "%%": "%"}
"""systemd specifiers the units may use, with a stand-in value."""
CONFIG_FILES = {
    "/etc/deerflow/controller.toml": DEPLOY / "controller.toml",
    "/etc/deerflow/agent.toml": DEPLOY / "agent.toml",
}
"""Where deploy/README.md installs the example config files the units pass with --config."""


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit (comments and sections dropped); a key may repeat."""
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


def command_line(exec_start: str, env: dict[str, str]) -> tuple[str, list[str]]:
    """(daemon name, arguments) of an ExecStart line, expanded as systemd does: ``${VAR}`` is one
    argument, a bare ``$VAR`` splits on whitespace; an unset variable fails the test."""
    words = []
    for word in shlex.split(exec_start):
        for spec, value in SPECIFIERS.items():
            word = word.replace(spec, value)
        bare = re.fullmatch(r"\$(\w+)", word)
        if bare:
            assert bare[1] in env, f"ExecStart uses ${bare[1]}, which {ENV_EXAMPLE.name} lacks"
            words.extend(env[bare[1]].split())
            continue

        def braced(m: re.Match[str]) -> str:
            assert m[1] in env, f"ExecStart uses ${{{m[1]}}}, which {ENV_EXAMPLE.name} lacks"
            return env[m[1]]

        word = re.sub(r"\$\{(\w+)\}", braced, word)
        words.append(str(CONFIG_FILES.get(word, word)))
    return Path(words[0]).name, words[1:]


def parsed(daemon: str, args: list[str]) -> dict[str, object]:
    """The daemon's parameters as its click parser reads ``args`` (nothing is started)."""
    with DAEMONS[daemon].make_context(daemon, list(args)) as ctx:
        return dict(ctx.params)


@pytest.fixture(scope="module")
def units() -> dict[str, tuple[dict[str, list[str]], list[str]]]:
    """Daemon name -> (unit settings, expanded arguments), for each unit in deploy/systemd."""
    env = env_file(ENV_EXAMPLE)
    out = {}
    for path in UNITS:
        settings = unit_settings(path)
        (exec_start,) = settings["ExecStart"]
        daemon, args = command_line(exec_start, env)
        assert daemon in DAEMONS, f"{path.name} starts {daemon}, not one of our daemons"
        out[daemon] = (settings, args)
    assert sorted(out) == sorted(DAEMONS)
    return out


def test_every_flag_a_unit_passes_is_one_its_daemon_accepts(
    units: dict[str, tuple[dict[str, list[str]], list[str]]],
) -> None:
    for daemon, (_, args) in units.items():
        known = {o for p in DAEMONS[daemon].params for o in (*p.opts, *p.secondary_opts)}
        unknown = [a for a in args if a.startswith("-") and a.split("=")[0] not in known]
        assert not unknown, f"{daemon} has no option {unknown}"
        parsed(daemon, args)  # values too: a bad one raises click's UsageError/BadParameter


def test_a_flag_the_daemon_lacks_is_caught() -> None:
    with pytest.raises(click.NoSuchOption):
        parsed("deerflow-controller", ["--etcd-endpoints", "x:2379"])


def test_the_units_describe_controllers_on_etcd_and_agents_that_know_them_all(
    units: dict[str, tuple[dict[str, list[str]], list[str]]],
) -> None:
    env = env_file(ENV_EXAMPLE)
    c_settings, c_args = units["deerflow-controller"]
    a_settings, a_args = units["deerflow-agent"]
    controller, agent = parsed("deerflow-controller", c_args), parsed("deerflow-agent", a_args)
    # Both read the one environment file deploy/README.md installs, and share its etcd.
    assert c_settings["EnvironmentFile"] == a_settings["EnvironmentFile"]
    assert c_settings["EnvironmentFile"] == ["/etc/deerflow/deerflow.env"]
    assert controller["etcd"] == agent["etcd"] == env["DEERFLOW_ETCD"]
    # A controller on etcd that tells callers where it is, reachable from other hosts.
    assert controller["advertise"] == env["DEERFLOW_ADVERTISE"]
    assert controller["host"] == "0.0.0.0"
    # Agents are given every controller, and the advertised address is one of them.
    controllers = env["DEERFLOW_CONTROLLER"].split(",")
    assert len(controllers) >= 2
    assert agent["controllers"] == tuple(controllers)
    assert env["DEERFLOW_ADVERTISE"] in controllers
    # Both drain on SIGTERM; an agent gets longer than the default attempt timeout to do it.
    assert c_settings["KillSignal"] == a_settings["KillSignal"] == ["SIGTERM"]
    (agent_stop,) = a_settings["TimeoutStopSec"]
    assert float(agent_stop) > SchedulerConfig().default_timeout_s


def test_each_unit_reads_its_example_config_file_with_the_daemons_own_parser(
    units: dict[str, tuple[dict[str, list[str]], list[str]]],
) -> None:
    expected = {
        "deerflow-controller": CONFIG_FILES["/etc/deerflow/controller.toml"],
        "deerflow-agent": CONFIG_FILES["/etc/deerflow/agent.toml"],
    }
    for daemon, (_, args) in units.items():
        assert args[args.index("--config") + 1] == str(expected[daemon])
        with DAEMONS[daemon].make_context(daemon, list(args)) as ctx:
            from_file = {
                name
                for name in ctx.params
                if ctx.get_parameter_source(name) is click.core.ParameterSource.DEFAULT_MAP
            }
        # Every key of the file took effect: none is shadowed by the unit's own command line,
        # so an operator editing the file is not overruled by a flag they cannot see there.
        doc = tomllib.loads(expected[daemon].read_text())
        keys = config_keys(DAEMONS[daemon])
        assert from_file == {keys[k].name for k in doc}, daemon


def test_the_example_config_files_give_the_values_the_units_used_to_pass(
    units: dict[str, tuple[dict[str, list[str]], list[str]]],
) -> None:
    agent = parsed("deerflow-agent", units["deerflow-agent"][1])
    controller = parsed("deerflow-controller", units["deerflow-controller"][1])
    assert agent["slots"] == 32
    assert agent["handler_slots"] == {"llm": 8}
    # One file per daemon: a DEERFLOW_CONFIG both units read would give each the other's keys.
    assert "DEERFLOW_CONFIG" not in env_file(ENV_EXAMPLE)
    assert controller["etcd_prefix"] == agent["etcd_prefix"]
    assert controller["tenant_weights"] == ("research=3", "batch=1")
