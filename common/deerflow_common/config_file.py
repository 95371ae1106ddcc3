"""``--config FILE``: one TOML file format for both daemons, giving any flag's value.

A key is the flag's long name without the dashes, spelled as on the command line::

    # controller.toml
    agent-slot-limit = 4
    tuner = "observe"
    tenant-weight = ["team-a=3", "team-b=1"]   # a repeatable flag takes a list
    no-cache = true                            # an on/off flag takes true or false

Precedence, highest first: the command line, the flag's environment variable, the config file,
the built-in default. The file is read with :mod:`tomllib` before any other flag (the option is
eager) and becomes the command's ``default_map``, which is exactly click's place for it between
the environment and the defaults. ``DEERFLOW_CONFIG`` names the file when ``--config`` does not.

Refused, each in one line naming the file: a file that cannot be read or is not TOML, a key that
is no flag of this daemon (with the closest one that is), a value of the wrong TOML type (naming
the type the flag takes), and a value the flag itself refuses (out of range, not a choice). A
relative path given to a path flag (``limits = "limits.toml"``) is taken relative to the config
file, not to the daemon's working directory.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["CONFIG_ENV", "config_key", "config_keys", "config_option", "read_config"]

CONFIG_ENV = "DEERFLOW_CONFIG"
"""The environment variable naming the config file when ``--config`` is not given."""

F = TypeVar("F", bound=Callable[..., Any])


def config_key(param: click.Parameter) -> str | None:
    """The config-file key of a parameter: its longest ``--`` option without the dashes (the
    ``--no-x`` half of an ``--x/--no-x`` pair is not a key; ``x = false`` says it). None for a
    parameter the file cannot set (an argument, ``--config`` itself)."""
    if not isinstance(param, click.Option) or param.name == "config":
        return None
    longs = [o for o in param.opts if o.startswith("--")]
    if not longs:
        return None
    return max(longs, key=len)[2:]


def config_keys(command: click.Command) -> dict[str, click.Option]:
    """Every key a config file of ``command`` may set, with the option it sets."""
    out: dict[str, click.Option] = {}
    for param in command.params:
        key = config_key(param)
        if key is not None and isinstance(param, click.Option):
            out[key] = param
    return out


def expected_type(option: click.Option) -> str:
    """The TOML type an option's key takes, as the refusal names it."""
    if option.is_flag:
        return "true or false"
    scalar = _scalar_kind(option.type)
    return f"a list of {_PLURAL[scalar]}" if option.multiple else _SINGULAR[scalar]


_SINGULAR = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
_PLURAL = {"int": "integers", "float": "numbers", "bool": "booleans", "str": "strings"}


def _scalar_kind(t: click.ParamType[Any]) -> str:
    if isinstance(t, click.types.BoolParamType):
        return "bool"
    if isinstance(t, click.types.IntParamType):  # IntRange too
        return "int"
    if isinstance(t, click.types.FloatParamType):  # FloatRange, FiniteFloatRange
        return "float"
    return "str"  # strings, choices, paths


def _fits(kind: str, value: object) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


def read_config(command: click.Command, path: Path) -> dict[str, Any]:
    """The file's values as ``command``'s ``default_map`` (by parameter name), each checked
    against its flag's type and range. Raises click.BadParameter with one line naming the file
    and what is wrong."""
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise click.BadParameter(f"cannot read {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise click.BadParameter(f"{path} is not TOML: {e}") from None
    return defaults_from_mapping(command, doc, where=str(path), base=path.parent)


def defaults_from_mapping(
    command: click.Command, doc: Mapping[str, Any], *, where: str, base: Path
) -> dict[str, Any]:
    """:func:`read_config` for an already parsed document (``where`` names it in messages,
    ``base`` is the folder relative paths are taken from)."""
    keys = config_keys(command)
    ctx = click.Context(command)
    out: dict[str, Any] = {}
    for key, value in doc.items():
        option = keys.get(key)
        if option is None or option.name is None:
            raise click.BadParameter(_unknown(where, key, keys))
        out[option.name] = _checked(ctx, option, key, value, where, base)
    return out


def _unknown(where: str, key: str, keys: Mapping[str, click.Option]) -> str:
    close = difflib.get_close_matches(key.replace("_", "-"), list(keys), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "keys are long flag names without '--'"
    return f"{where}: unknown key {key!r}; {hint} (see docs/CONFIGURATION.md)"


def _checked(
    ctx: click.Context, option: click.Option, key: str, value: object, where: str, base: Path
) -> Any:
    """``value`` for ``option`` as the default_map holds it; raises BadParameter when its TOML
    type is wrong or the flag refuses it."""
    kind = "bool" if option.is_flag else _scalar_kind(option.type)
    values = value if option.multiple and isinstance(value, list) else [value]
    if (option.multiple and not isinstance(value, list)) or not all(_fits(kind, v) for v in values):
        shown = click.unstyle(repr(value))[:80]
        raise click.BadParameter(
            f"{where}: {key} = {shown} is {_toml_type(value)}; {key} takes {expected_type(option)}"
        )
    if isinstance(option.type, click.Path):
        values = [_beside(base, str(v)) for v in values]
    if not option.is_flag:
        for v in values:
            try:
                option.type.convert(v, option, ctx)
            except click.BadParameter as e:
                raise click.BadParameter(f"{where}: {key} = {v!r}: {e.message}") from None
    return values if option.multiple else values[0]


def _beside(base: Path, value: str) -> str:
    """A relative path of the file taken from the file's folder."""
    return str(base / value) if value and not Path(value).is_absolute() else value


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # dates and times


def _load(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is None:
        return
    ctx.default_map = {**(ctx.default_map or {}), **read_config(ctx.command, value)}


def config_option(fn: F) -> F:
    """The ``--config FILE`` option (env ``DEERFLOW_CONFIG``) of a daemon's command."""
    return click.option(
        "--config",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=CONFIG_ENV,
        is_eager=True,
        expose_value=False,
        callback=_load,
        help="TOML file giving any of these flags' values by long name (agent-slot-limit = 4); "
        "the command line and environment win over it (env DEERFLOW_CONFIG; see "
        "docs/CONFIGURATION.md).",
    )(fn)
