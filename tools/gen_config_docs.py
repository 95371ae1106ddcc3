"""Generate docs/CONFIGURATION.md from the live click commands and the environment the code reads.

    python tools/gen_config_docs.py          # rewrite docs/CONFIGURATION.md (make docs)
    python tools/gen_config_docs.py --check  # exit 1 when it is out of date

Every flag comes from the click objects themselves (the daemons, ``deerflow`` and every
subcommand, ``deerflow bench ...`` included), so a new flag appears here by running this script
and nowhere else needs a list. Environment variables are the flags' ``envvar`` plus every
``DEERFLOW_*``/``OTEL_*`` name written as a string in the product's source: those a flag does not
declare need a sentence in :data:`ENVIRONMENT` (the test says which one is missing).
tests/test_configuration_doc.py regenerates this in memory and fails when the file differs.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "CONFIGURATION.md"
REGENERATE = "make docs (or: .venv/bin/python tools/gen_config_docs.py)"

SOURCE_PACKAGES = {
    "controller/deerflow_controller": ("controller",),
    "agent/deerflow_agent": ("agent",),
    "common/deerflow_common": ("controller", "agent"),
    "simulator/deerflow_simulator": ("simulator",),
    "bench/deerflow_bench": ("bench", "demo"),
    "dropins/deerflow_dropins": ("DeerFlow drop-ins",),
}
"""Where environment variable names are looked for, and who reads them."""

ENV_NAME = re.compile(r"(DEERFLOW|OTEL)_[A-Z0-9_]+|GRPC_EXPERIMENTS")

ENVIRONMENT: dict[str, str] = {
    # gRPC
    "GRPC_EXPERIMENTS": "gRPC's own list of experiments, read when grpc is imported. Unset, "
    "the daemons and the `deerflow` command set it to turn off gRPC's EventEngine endpoints "
    "(`deerflow_common.grpc_endpoints`: less CPU and latency per message on grpc.aio); a "
    "value given (even empty, for gRPC's defaults) is kept. The SDK leaves a caller's "
    "environment alone: set it before importing grpc to get the same.",
    # Logging and identity
    "DEERFLOW_LOG_LEVEL": "Log level of the daemons when `--log-level` is not given "
    "(DEBUG, INFO, WARNING, ...; default INFO).",
    "DEERFLOW_JOIN_TOKEN": "The agent's join token when `--join-token-file` is not given "
    "(the controller's `--auth-file` must admit it); a controller sets it for its local agents.",
    "DEERFLOW_AGENT_TOKEN": "Older name of `DEERFLOW_JOIN_TOKEN`, read when that is unset.",
    # Provider handlers on agents
    "DEERFLOW_LLM_BASE_URL": "Base URL of the OpenAI-compatible API the `llm` handler calls "
    "when the payload names none (trusted: not subject to `--http-allow`).",
    "DEERFLOW_LLM_API_KEY": "API key of the `llm` handler when the payload gives none; masked "
    "in every error message and log line.",
    "DEERFLOW_SEARCH_BASE_URL": "Base URL of the Tavily-compatible API of the `search` handler.",
    "DEERFLOW_SEARCH_API_KEY": "API key of the `search` handler; masked like the LLM's.",
    "DEERFLOW_CRAWL_BASE_URL": "Base URL of the Jina-compatible reader of the `crawl` handler.",
    "DEERFLOW_CRAWL_API_KEY": "API key of the `crawl` handler; masked like the LLM's.",
    "DEERFLOW_WORK_SPEED": "Speed of the `work` handler on this agent (1 nominal, 0.5 twice as "
    "slow): stands in for slower hardware in benchmarks. Read once at start.",
    # The DeerFlow drop-ins (docs/DEERFLOW.md)
    "DEERFLOW_CONF_PATH": "Where the drop-ins' `get_llm_by_type` reads DeerFlow's conf.yaml "
    "(default ./conf.yaml).",
    "DEERFLOW_TENANT": "Tenant the drop-ins submit their tasks as (the controller's fair share "
    "is per tenant; `--tenant-weight`).",
    "DEERFLOW_LLM_ACCOUNT": "Provider account (rate-limit key) of the drop-ins' LLM calls "
    "(default `default`).",
    "DEERFLOW_SEARCH_ACCOUNT": "Provider account of the drop-ins' search calls.",
    "DEERFLOW_CRAWL_ACCOUNT": "Provider account of the drop-ins' crawl calls.",
    "DEERFLOW_SUBAGENTS": "Sub-agent factories the `subagent` handler may run, as "
    "`name=module:attr` entries, besides the `deerflow.subagents` entry points.",
    "DEERFLOW_SUBAGENT_TOKEN_BUDGET": "Token budget of a sub-agent when its caller gives none.",
    "DEERFLOW_PYTHON_CPU_S": "CPU seconds one run of the `python` handler may use (1-3600).",
    "DEERFLOW_PYTHON_MEMORY_MB": "Memory (MiB) one run of the `python` handler may use.",
    "DEERFLOW_PYTHON_FILE_MB": "Largest file (MiB) one run of the `python` handler may write.",
    "DEERFLOW_PYTHON_OUTPUT_KB": "Most output (KiB) one run of the `python` handler returns.",
    "DEERFLOW_PYTHON_TIMEOUT_S": "Wall-clock limit (s) of one run of the `python` handler.",
    # OpenTelemetry (the standard variables; tracing is off without an endpoint)
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OTLP collector address; setting it (or the traces one) "
    "turns tracing on in the controller, agents and SDK.",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "OTLP address for traces only; wins over "
    "`OTEL_EXPORTER_OTLP_ENDPOINT`.",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "`grpc` (default) or `http/protobuf`.",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "The protocol for traces only.",
    "OTEL_TRACES_EXPORTER": "`otlp` (default) or `none`; others are refused with a warning.",
    "OTEL_SDK_DISABLED": "`true` turns tracing off whatever else is set.",
    "OTEL_SERVICE_NAME": "Service name on spans (default: the daemon's name).",
    "OTEL_RESOURCE_ATTRIBUTES": "Extra resource attributes, `k=v,k=v`.",
    "OTEL_BSP_MAX_QUEUE_SIZE": "Spans held for export before new ones are dropped (2048).",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "Spans per export request (512).",
    "OTEL_BSP_SCHEDULE_DELAY": "Milliseconds between exports (5000).",
    "OTEL_BSP_EXPORT_TIMEOUT": "Milliseconds one export may take (30000).",
}
"""Environment variables no flag declares, with what they do. A name the code reads that is
missing here fails tests/test_configuration_doc.py."""


@dataclass(frozen=True)
class Program:
    """One documented entry point: its command, how it is invoked, and whether ``--config``
    files apply to it."""

    title: str
    command: click.Command
    config_file: bool


def programs() -> list[Program]:
    """The entry points, imported now so that the flags are the installed code's."""
    from deerflow_agent.main import main as agent
    from deerflow_controller.cli import main as cli
    from deerflow_controller.main import main as controller

    return [
        Program("deerflow-controller", controller, True),
        Program("deerflow-agent", agent, True),
        Program("deerflow", cli, False),
    ]


# --------------------------------------------------------------------------- rendering


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


_UNSET = getattr(click.core, "UNSET", None)
"""click >= 8.2's marker of a parameter without a default (older clicks use None)."""


def _default(option: click.Option) -> str:
    shown = option.show_default
    if isinstance(shown, str):
        return _cell(shown)
    value = None if option.default is _UNSET else option.default
    if option.is_flag and not option.secondary_opts:
        return "on" if value else "off"
    if value is None:
        return "none" if option.multiple else ""
    if callable(value):
        return "computed"
    if isinstance(value, bool):
        opts = option.opts if value else option.secondary_opts
        return f"`{opts[0]}`" if opts else str(value).lower()
    if isinstance(value, list | tuple):
        return ", ".join(f"`{v}`" for v in value) if value else "none"
    if isinstance(value, str | int | float):
        return f"`{value}`" if value != "" else '`""`'
    return _cell(str(value))


def _value_kind(option: click.Option) -> str:
    """What the flag takes: a metavar, the choices, or the type with its range."""
    t = option.type
    if option.metavar:
        return option.metavar
    if isinstance(t, click.Choice):
        return "{" + ",".join(str(c) for c in t.choices) + "}"
    if isinstance(t, click.types._NumberRangeBase):
        base = "INT" if isinstance(t, click.types.IntParamType) else "FLOAT"
        return f"{base} ({t._describe_range()})"
    if isinstance(t, click.Path):
        return "FILE" if not t.dir_okay else "PATH"
    return {"integer": "INT", "float": "FLOAT", "text": "TEXT", "boolean": "BOOL"}.get(
        t.name, t.name.upper()
    )


def _flag(option: click.Option) -> str:
    names = [*option.opts, *option.secondary_opts]
    text = " / ".join(f"`{n}`" for n in names)
    if not option.is_flag:
        text += " " + _value_kind(option)
    return _cell(text)


def _envvars(option: click.Option) -> list[str]:
    env = option.envvar
    if not env:
        return []
    return [env] if isinstance(env, str) else list(env)


def _commands(
    command: click.Command, path: str, parent: click.Context | None = None
) -> Iterator[tuple[str, click.Command, click.Context]]:
    ctx = click.Context(command, info_name=path.split()[-1], parent=parent)
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from _commands(command.commands[name], f"{path} {name}", ctx)


def _options_table(command: click.Command, config_file: bool) -> list[str]:
    from deerflow_common.config_file import config_key

    options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
    if not options:
        return []
    head = ["flag", "default", "env"] + (["config key"] if config_file else []) + ["meaning"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for option in options:
        env = ", ".join(f"`{e}`" for e in _envvars(option))
        row = [_flag(option), _default(option), env]
        if config_file:
            key = config_key(option)
            row.append(f"`{key}`" if key else "")
        row.append(_cell(option.help or ""))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _summary(command: click.Command) -> str:
    text = (command.help or command.short_help or "").split("\n\n")[0]
    return " ".join(text.split())


def _usage(path: str, command: click.Command, ctx: click.Context) -> str:
    pieces = command.collect_usage_pieces(ctx)
    return f"`{path} {' '.join(pieces)}`".replace(" `", "`").replace("  ", " ")


def render() -> str:
    """The whole of docs/CONFIGURATION.md."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by tools/gen_config_docs.py from the code; do not edit by hand. "
        f"Regenerate with {REGENERATE}. -->",
        "",
        "Every flag, environment variable and config-file key of the controller, the agent, the "
        "`deerflow` command line (the provider simulator `deerflow sim` and the benchmarks "
        "`deerflow bench` among its subcommands), with its default and meaning. "
        "Where a flag has an environment variable, the flag wins over it. The simulator also "
        "runs as `python -m deerflow_simulator`, with the flags of `deerflow sim`.",
        "",
        "## Config files",
        "",
        "Both daemons read a TOML file with `--config FILE` (or `DEERFLOW_CONFIG=FILE`): each "
        "key is a flag's long name without the dashes, spelled as on the command line "
        "(`agent-slot-limit = 4`, not `agent_slot_limit`); a repeatable flag takes a list "
        '(`tenant-weight = ["a=3", "b=1"]`), an on/off flag `true` or `false`. Precedence, '
        "highest first: **command line, environment, config file, default**. An unknown key "
        "(the closest valid one is suggested), a value of the wrong TOML type or one the flag "
        "refuses stops the daemon with one line naming the file and the key. A relative path "
        "in the file is read from the file's folder. Each daemon has its own file: set "
        "`DEERFLOW_CONFIG` per process, not in an environment file both daemons read (a "
        "controller does not hand its own to the agents it starts with `--local-agents`; give "
        "them one with `--agent-arg=--config=FILE`). Examples: "
        "[deploy/controller.toml](../deploy/controller.toml), "
        "[deploy/agent.toml](../deploy/agent.toml). The controller's rate limits keep their own "
        "file (`--limits`, see the README), and the simulator's `--config` is a JSON SimConfig.",
        "",
    ]
    for program in programs():
        for path, command, ctx in _commands(program.command, program.title):
            level = "##" if path == program.title else "###"
            out += [f"{level} {path}", ""]
            summary = _summary(command)
            if summary:
                out += [summary, ""]
            if not isinstance(command, click.Group) or command.params:
                out += [f"Usage: {_usage(path, command, ctx)}", ""]
            table = _options_table(command, program.config_file and path == program.title)
            if table:
                out += [*table, ""]
    out += _environment_section()
    return "\n".join(out).rstrip() + "\n"


def _environment_section() -> list[str]:
    declared: dict[str, list[str]] = {}
    for program in programs():
        for path, command, _ in _commands(program.command, program.title):
            for p in command.params:
                if isinstance(p, click.Option):
                    for env in _envvars(p):
                        declared.setdefault(env, []).append(f"`{path} {p.opts[-1]}`")
    read = environment_read()
    lines = [
        "## Environment variables",
        "",
        "| variable | read by | meaning |",
        "|---|---|---|",
    ]
    for name in sorted(set(declared) | set(read)):
        if name in declared:
            meaning = "The value of " + ", ".join(declared[name]) + " when the flag is not given."
            where = "(its flags)"
        else:
            meaning = ENVIRONMENT.get(name, "")
            where = ", ".join(sorted(read[name]))
        lines.append(f"| `{name}` | {where} | {_cell(meaning)} |")
    return [*lines, ""]


def environment_read() -> dict[str, set[str]]:
    """Every ``DEERFLOW_*``/``OTEL_*`` name (and ``GRPC_EXPERIMENTS``) the product's source
    spells out as a whole string
    (an ``os.environ`` key, a constant naming one), with who reads it."""
    found: dict[str, set[str]] = {}
    for folder, readers in SOURCE_PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and ENV_NAME.fullmatch(node.value)
                ):
                    found.setdefault(node.value, set()).update(readers)
    return found


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
