"""``deerflow demo --deerflow``: runs the DeerFlow-shaped example and prints it (kept apart from
``_cli`` so that module stays small and the example's imports load only when asked for)."""

from __future__ import annotations

import json as jsonlib
import sys

import click

from deerflow_common import run
from deerflow_controller.client import DeerflowError

MAX_TOPIC_CHARS = 300


def example(
    *, agents: int, steps: int, topic: str, time_scale: float, seed: int, json: bool
) -> None:
    """Run the example; exit 1 unless every task succeeded (an error is one line on stderr)."""
    if not topic.strip() or len(topic) > MAX_TOPIC_CHARS:
        click.echo(f"error: --topic must be 1 to {MAX_TOPIC_CHARS} characters", err=True)
        sys.exit(2)
    try:
        from ._example import ExampleError, render, run_example
    except ImportError as e:
        click.echo(
            f"error: the DeerFlow example needs the deerflow extra ({e.name} is missing); "
            "run `make example`",
            err=True,
        )
        sys.exit(1)
    try:
        result = run(
            run_example(topic=topic, steps=steps, agents=agents, time_scale=time_scale, seed=seed)
        )
    except (DeerflowError, ExampleError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(jsonlib.dumps(result.summary()) if json else render(result))
    if not result.ok:
        sys.exit(1)
