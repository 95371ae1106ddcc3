"""The dashboard in a real browser: headless Chromium from Debian's packages loads the page
from a running controller, the page polls /api/stats, and its panels show the cluster's live
numbers. A screenshot is kept in test-artifacts/dashboard.png."""

from __future__ import annotations

import asyncio
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from deerflow_controller.client import Task

from .conftest import ClusterFactory, http_get

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
)


async def chromium(profile: Path, *args: str) -> str:
    """Run headless Chromium (never a downloaded browser) and return its stdout."""
    proc = await asyncio.create_subprocess_exec(
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    return out.decode()


class _TextById(HTMLParser):
    """The text under every element that has an id, and the body's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.body: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        if tag in ("br", "img", "meta", "input", "link"):
            return
        self._open.append(a.get("id"))
        if a.get("id"):
            self.text.setdefault(a["id"], "")

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag not in ("br", "img", "meta", "input", "link"):
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element_id in self._open:
            if element_id:
                self.text[element_id] += data


@needs_chromium
async def test_dashboard_panels_show_the_clusters_live_numbers(
    plugin_env: None, make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = await make_cluster(2, slots=4, agent_args=("--handler", "obs_test_plugins:flaky"))
    tasks = [Task(f"e{i}", "echo", "x") for i in range(30)]
    tasks += [Task(f"k{i}", "echo", "x", rate_keys=["llm/key-1"]) for i in range(5)]
    tasks += [Task("f", "flaky", "x"), Task("bad", "no_such_handler")]
    async with await cluster.client() as client:
        await (await client.submit(tasks, name="dashboard")).wait(timeout_s=30)
    url = f"{cluster.http}/"

    page = _TextById()
    page.feed(await chromium(tmp_path / "dom", "--virtual-time-budget=5000", "--dump-dom", url))
    t = page.text
    assert int(page.body["data-updates"]) >= 1, "the page never rendered /api/stats"
    assert t["controller-id"] == cluster.address
    assert t["serving"] == "serving"
    assert (t["stat-submitted"], t["stat-succeeded"]) == ("37", "36")
    assert (t["stat-failed"], t["stat-retries"]) == ("1", "1")
    for live in ("live-queued", "live-running", "live-throttled", "live-pending"):
        assert t[live] == "0"
    assert "agent-1" in t["agents"] and "agent-2" in t["agents"]
    assert "echo" in t["latency"] and "flaky" in t["latency"] and " ms" in t["latency"]
    assert "llm/key-1" in t["ratekeys"]
    assert t["cache-hit-rate"].endswith("%")  # the cache is on; echo is not cacheable
    assert "misses" in t["cache-layers"]
    assert "no circuit has opened" in t["circuits"]
    assert "UNKNOWN_HANDLER (failed)" in t["error-kinds"]
    assert "HANDLER_ERROR (retried)" in t["error-kinds"]
    assert "no_such_handler" in t["errors"] or "bad" in t["errors"]
    assert t["suggestions"].strip()
    # The tuner observes by default: its mode and knobs, and its history (or none yet).
    assert "observe" in t["tuner-state"] and "agent_slots" in t["tuner-state"]
    assert t["tuner-history"].strip()

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    await chromium(
        tmp_path / "shot",
        "--virtual-time-budget=5000",
        "--window-size=1280,900",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        url,
    )
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


async def test_stats_suggest_starting_agents_when_work_waits_for_none(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(0)
    async with await cluster.client() as client:
        await client.submit([Task(f"t{i}", "echo", "x") for i in range(3)])
        status, body = await http_get(f"{cluster.http}/api/stats")
    assert status == 200
    stats = json.loads(body)
    assert stats["tasks"]["live"]["queued"] == 3
    assert stats["tasks"]["queue_by_priority"] == {"0": 3}
    (suggestion,) = [s for s in stats["suggestions"] if s["id"] == "no_agents"]
    assert suggestion["severity"] == "critical" and suggestion["value"] == 3
    assert "start deerflow-agent" in suggestion["detail"]
