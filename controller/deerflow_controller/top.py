"""``deerflow top``: a live terminal view of the controller, the same numbers as its dashboard.

It polls the controller's ``/api/stats`` (the HTTP side, port 7401 by default) and redraws once
per interval: throughput, tasks by state, latency percentiles per handler, agents and their
load, rate keys, errors and the optimisation suggestions. ``--once`` prints one frame and exits
(for scripts and for terminals without cursor control).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from deerflow_common import run
from deerflow_common.cli_types import FiniteFloatRange
from deerflow_common.tls import TlsError, TlsFiles, client_ssl_context

if TYPE_CHECKING:  # loaded when the live view runs, not with every `deerflow` command
    import aiohttp

__all__ = ["fetch_stats", "render", "top"]

DEFAULT_URL = "http://127.0.0.1:7401"


async def fetch_stats(session: aiohttp.ClientSession, url: str, timeout_s: float = 5.0) -> Any:
    """GET ``url``/api/stats. Raises aiohttp.ClientError or TimeoutError."""
    import aiohttp

    async with session.get(
        url.rstrip("/") + "/api/stats", timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as resp:
        resp.raise_for_status()
        return await resp.json()


def _num(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if not v.is_integer() else f"{int(v):,}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _secs(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 0.01:
        return f"{v * 1000:.2f}ms"
    return f"{v:.3f}s" if v < 10 else f"{v:.1f}s"


def _bar(fraction: float, width: int = 10) -> Text:
    filled = max(0, min(width, round(fraction * width)))
    style = "green" if fraction < 0.7 else "yellow" if fraction < 0.9 else "red"
    return Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim")


def _spark(values: list[float], width: int = 40) -> str:
    blocks = " ▁▂▃▄▅▆▇█"
    values = values[-width:]
    if not values:
        return ""
    top = max(values) or 1.0
    return "".join(blocks[min(8, round(8 * v / top))] for v in values)


def render(s: Any) -> RenderableType:
    """One frame from a ``/api/stats`` document."""
    c, t = s["controller"], s["tasks"]
    live, window = t["live"], s.get("window", {})
    head = Text.assemble(
        ("deerflow top ", "bold"),
        f"controller {c['id']}  up {c['uptime_s']:.0f}s  ",
        ("serving" if c["serving"] else "NOT SERVING", "green" if c["serving"] else "bold red"),
        f"  agents {len(s['agents'])}  jobs active {s['jobs_active']}",
        f"  tracing {'on' if s['tracing']['enabled'] else 'off'}",
    )
    summary = Table.grid(padding=(0, 3))
    for _ in range(4):
        summary.add_column(justify="right")
    summary.add_row(
        Text(f"{_num(s['throughput']['completed_per_s'])} tasks/s", style="bold cyan"),
        f"submitted {_num(t['submitted'])}",
        f"succeeded {_num(t['succeeded'])}",
        f"failed {_num(t['failed'])}  retries {_num(t['retries'])}",
    )
    summary.add_row(
        f"queued {_num(live['queued'])}",
        f"throttled {_num(live['throttled'])}",
        f"running {_num(live['running'])}  dispatched {_num(live['dispatched'])}",
        f"pending {_num(live['pending'])}",
    )
    spark = _spark(s["throughput"]["series"].get("completed_per_s", []))
    use = window.get("utilisation", 0.0)
    summary.add_row(
        Text(spark, style="cyan"),
        "",
        Text.assemble("use ", _bar(use), f" {use:.0%}"),
        f"last {window.get('seconds', 0):.0f}s: {_num(window.get('completed_per_s'))}/s",
    )

    lat = Table(title="latency (latest tasks)", expand=True, title_justify="left")
    for col in (
        "handler",
        "n",
        "wait p50",
        "wait p95",
        "wait p99",
        "run p50",
        "run p95",
        "run p99",
    ):
        lat.add_column(col, justify="left" if col == "handler" else "right")
    for name, h in s["latency"]["handlers"].items():
        w, r = h["wait"], h["run"]
        lat.add_row(
            name,
            _num(r["n"] or w["n"]),
            _secs(w["p50"]),
            _secs(w["p95"]),
            _secs(w["p99"]),
            _secs(r["p50"]),
            _secs(r["p95"]),
            _secs(r["p99"]),
        )

    agents = Table(title="agents", expand=True, title_justify="left")
    columns = ("agent", "slots", "in flight", "use", "running", "agent cpu%", "host cpu%")
    for col in (*columns, "host mem%", "done", "state"):
        agents.add_column(col, justify="left" if col in ("agent", "use", "state") else "right")
    for a in s["agents"]:
        agents.add_row(
            a["id"],
            _num(a["slots"]),
            _num(a["in_flight"]),
            _bar(a["utilisation"]),
            _num(a["running"]),
            f"{a.get('process_cpu_percent', 0.0):.0f}",
            f"{a['cpu_percent']:.0f}",
            f"{a['memory_percent']:.0f}",
            _num(a["completed"]),
            Text("draining", style="yellow") if a["draining"] else Text("active"),
        )

    parts: list[RenderableType] = [head, summary, lat, agents]
    if s["rate_keys"]:
        keys = Table(title="rate keys", expand=True, title_justify="left")
        for col in ("key", "req/s", "limit", "in flight", "waiting", "admitted", "429s", "paused"):
            keys.add_column(col, justify="left" if col == "key" else "right")
        for k in s["rate_keys"]:
            keys.add_row(
                k["key"],
                _num(k["paced_rps"]),
                _num(k["concurrency_limit"] or None),
                _num(k["in_flight"]),
                _num(k["waiting"]),
                _num(k["admitted"]),
                _num(k["rate_limited"]),
                _secs(k["paused_for_s"]) if k["paused_for_s"] else "-",
            )
        parts.append(keys)
    errors = s["errors"]
    kinds = {**{f"{k} failed": n for k, n in errors["failures_by_kind"].items()}}
    kinds.update({f"{k} retried": n for k, n in errors["retries_by_kind"].items()})
    if kinds or errors["recent"]:
        lines = [Text("  ".join(f"{k}: {n}" for k, n in kinds.items()), style="red")]
        for e in errors["recent"][:5]:
            lines.append(Text(f"{e['task']} {e['state']} {e['kind']}: {e['message'][:100]}"))
        parts.append(Panel(Group(*lines), title="errors", title_align="left"))
    sugg = s["suggestions"]
    style = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
    lines = [
        Text.assemble((f"{g['severity']:8s} ", style.get(g["severity"], "")), g["detail"])
        for g in sugg
    ] or [Text("none: nothing to improve right now", style="dim")]
    parts.append(Panel(Group(*lines), title="suggestions", title_align="left"))
    return Group(*parts)


async def _loop(url: str, interval_s: float, once: bool, console: Console) -> int:
    import aiohttp

    token = os.environ.get("DEERFLOW_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    # https:// URLs are verified with $DEERFLOW_TLS_CA (and $DEERFLOW_TLS_CERT/KEY presented).
    tls = TlsFiles.from_env()
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(tls)) if tls is not None else None
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        if once:
            console.print(render(await fetch_stats(session, url)))
            return 0
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                try:
                    frame: RenderableType = render(await fetch_stats(session, url))
                except (aiohttp.ClientError, TimeoutError) as e:
                    frame = Text(f"cannot read {url}/api/stats: {e}; retrying", style="red")
                live.update(frame, refresh=True)
                await asyncio.sleep(interval_s)


@click.command()
@click.option(
    "--http",
    "url",
    default=DEFAULT_URL,
    envvar="DEERFLOW_HTTP",
    show_default=True,
    help="The controller's HTTP address (its --http-port; env DEERFLOW_HTTP).",
)
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=FiniteFloatRange(min=0.1, max=3600),
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one frame and exit.")
def top(url: str, interval: float, once: bool) -> None:
    """A live view of the controller: throughput, queue, latency, agents, rate keys, errors
    and suggestions (Ctrl-C to quit)."""
    import aiohttp

    console = Console()
    try:
        code = run(_loop(url, interval, once, console))
    except KeyboardInterrupt:
        code = 0
    except TlsError as e:  # $DEERFLOW_TLS_* names a bad file
        click.echo(f"error: {e}", err=True)
        code = 2
    except (aiohttp.ClientError, TimeoutError) as e:
        click.echo(
            f"error: cannot read {url}/api/stats ({e}); is the controller's HTTP side on "
            "(--http-port) and is --http right?",
            err=True,
        )
        code = 1
    sys.exit(code)
