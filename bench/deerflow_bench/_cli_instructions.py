"""``deerflow bench instructions``: the controller's instructions per task under callgrind (issue
#19, item 3: what the VM's clock cannot measure). Registered on the ``bench`` group of
:mod:`._cli`."""

from __future__ import annotations

import click

from deerflow_common import run

from ._cli import _emit, bench, json_option, tasks_option


@bench.command("instructions")
@tasks_option(5000, most=100_000)
@click.option(
    "--traced",
    is_flag=True,
    help="Trace and export every task to a local OTLP receiver, as `deerflow bench tracing`.",
)
@json_option
def bench_instructions(tasks: int, traced: bool, as_json: bool) -> None:
    """CPU instructions the controller spends per no-op task (callgrind counts them; needs
    valgrind): one job submitted and streamed through the SDK, 2 agents x 64 slots."""
    from ._instructions import MissingTool, instructions

    try:
        result = run(instructions(tasks, traced=traced))
    except MissingTool as e:
        raise click.UsageError(str(e)) from None
    _emit(result, as_json)
