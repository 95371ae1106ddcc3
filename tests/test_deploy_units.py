"""The systemd units in deploy/ run the daemons as the code defines them: every flag they pass is
one the daemon's parser accepts (checked by parsing the command line with it), and together they
describe the HA deployment deploy/README.md promises."""

from __future__ import annotations

import tomllib
from pathlib import Path

import click
import pytest

from deerflow_common.config_file import config_keys
from deerflow_controller.config import SchedulerConfig

from .deploy._commands import (
    DAEMONS,
    ENV_EXAMPLE,
    UNITS,
    command_line,
    env_file,
    map_paths,
    unit_settings,
)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CONFIG_FILES = {"controller.toml": DEPLOY / "controller.toml", "agent.toml": DEPLOY / "agent.toml"}
"""The example config files deploy/README.md installs as /etc/deerflow/*.toml (the units pass
them with --config): read as they are, not as stand-ins."""

# The unit files name /etc/deerflow/... files; the parser checks they exist, so they are mapped to
# stand-ins (tests/deploy/test_commands.py runs the units' commands with real ones).
_STAND_INS: dict[str, Path] = dict(CONFIG_FILES)


@pytest.fixture(scope="module", autouse=True)
def _stand_ins(tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("unit-files")
    for name in ("auth.toml", "controller.pem", "controller.key", "ca.pem", "join-token"):
        (d / name).write_text("stand-in\n")
        _STAND_INS[name] = d / name


def parsed(daemon: str, args: list[str]) -> dict[str, object]:
    """The daemon's parameters as its click parser reads ``args`` (nothing is started)."""
    with DAEMONS[daemon].make_context(daemon, map_paths(args, _STAND_INS)) as ctx:
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
    assert sorted(out) == ["deerflow-agent", "deerflow-controller"]
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
    expected = {"deerflow-controller": "controller.toml", "deerflow-agent": "agent.toml"}
    for daemon, (_, args) in units.items():
        assert args[args.index("--config") + 1] == f"/etc/deerflow/{expected[daemon]}"
        mapped = map_paths(args, _STAND_INS)
        with DAEMONS[daemon].make_context(daemon, mapped) as ctx:
            from_file = {
                name
                for name in ctx.params
                if ctx.get_parameter_source(name) is click.core.ParameterSource.DEFAULT_MAP
            }
        # Every key of the file took effect: none is shadowed by the unit's own command line,
        # so an operator editing the file is not overruled by a flag they cannot see there.
        doc = tomllib.loads(CONFIG_FILES[expected[daemon]].read_text())
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
