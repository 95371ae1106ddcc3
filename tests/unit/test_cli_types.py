"""Every float a person types on a command line is finite: click's own ranges let NaN through."""

from __future__ import annotations

from typing import Any

import click
import pytest

from deerflow_common.cli_types import FiniteFloatRange
from deerflow_controller.cli import main as deerflow_cli
from deerflow_controller.main import main as controller_main
from deerflow_simulator.cli import sim as simulator_main


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf"])
def test_a_finite_float_range_refuses_nan_and_infinities_with_a_sentence(text: str) -> None:
    with pytest.raises(click.BadParameter, match="is not a finite number"):
        FiniteFloatRange().convert(text, None, None)


def test_a_finite_float_range_keeps_its_bounds() -> None:
    assert FiniteFloatRange(0, 10).convert("2.5", None, None) == 2.5
    with pytest.raises(click.BadParameter):
        FiniteFloatRange(0, 10).convert("11", None, None)


def _float_options(
    command: click.Command, path: str = ""
) -> list[tuple[str, click.ParamType[Any]]]:
    found: list[tuple[str, click.ParamType[Any]]] = []
    for param in command.params:
        if isinstance(param.type, click.types.FloatParamType):
            found.append((f"{path}{command.name} {param.opts[0]}", param.type))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            found += _float_options(sub, f"{path}{command.name} ")
    return found


@pytest.mark.parametrize(
    "command", [controller_main, simulator_main], ids=["deerflow-controller", "deerflow sim"]
)
def test_every_float_flag_of_the_daemons_refuses_nan(command: click.Command) -> None:
    loose = [
        name for name, kind in _float_options(command) if not isinstance(kind, FiniteFloatRange)
    ]
    assert loose == []


def test_the_operator_commands_float_flags_refuse_nan() -> None:
    operator = [
        (name, kind)
        for name, kind in _float_options(deerflow_cli)
        if " bench " not in name and " demo " not in name
    ]
    assert operator, "the walk found no float flag: the test would prove nothing"
    assert [name for name, kind in operator if not isinstance(kind, FiniteFloatRange)] == []
