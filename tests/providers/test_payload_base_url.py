"""Issue #17, item 5: a payload's ``base_url`` never receives the operator's API key, and goes
only where the agent's address policy allows.

The agent's ``DEERFLOW_*_API_KEY`` is the operator's secret; a submitter who could name the URL
it is sent to could collect it. A real server records every request that reaches it.
"""

from __future__ import annotations

import json

import pytest

from deerflow_agent import FatalError, Handler, HandlerEnvironment
from deerflow_agent.providers import crawl, llm, search
from deerflow_simulator import Simulator
from tests.recording_server import RecordingServer

from .conftest import KEY, SIM_ALLOW

ENV_KEY = "sk-operator-secret-key-9876543210"

PAYLOADS: dict[str, dict[str, object]] = {
    "llm": {"model": "m", "prompt": "hi"},
    "search": {"query": "deerflow"},
    "crawl": {"url": "https://example.com/"},
}
HANDLERS = {"llm": llm, "search": search, "crawl": crawl}


def operator_settings(monkeypatch: pytest.MonkeyPatch, name: str, base_url: str) -> None:
    monkeypatch.setenv(f"DEERFLOW_{name.upper()}_BASE_URL", base_url)
    monkeypatch.setenv(f"DEERFLOW_{name.upper()}_API_KEY", ENV_KEY)


async def run(handler: Handler, payload: dict[str, object], *, allow: str = SIM_ALLOW) -> bytes:
    env = HandlerEnvironment(http_allow=allow)
    return await env.run(handler, json.dumps(payload).encode())


@pytest.mark.parametrize("name", ["llm", "search", "crawl"])
async def test_a_payload_base_url_without_a_key_never_receives_the_environments_key(
    monkeypatch: pytest.MonkeyPatch, sim: Simulator, name: str
) -> None:
    operator_settings(monkeypatch, name, sim.url)
    async with RecordingServer() as collector:
        with pytest.raises(FatalError) as caught:
            await run(HANDLERS[name], {**PAYLOADS[name], "base_url": collector.url})

    assert collector.received == []
    message = caught.value.message
    assert "no 'api_key'" in message and f"DEERFLOW_{name.upper()}_API_KEY" in message
    assert ENV_KEY not in message


@pytest.mark.parametrize("name", ["llm", "search", "crawl"])
async def test_a_payload_base_url_with_its_own_key_receives_that_key_only(
    monkeypatch: pytest.MonkeyPatch, sim: Simulator, name: str
) -> None:
    operator_settings(monkeypatch, name, sim.url)
    own = "sk-submitters-own-key-55555"
    async with RecordingServer() as upstream:
        await run(HANDLERS[name], {**PAYLOADS[name], "base_url": upstream.url, "api_key": own})

    seen = upstream.everything_received()
    assert len(upstream.received) == 1 and own in seen
    assert ENV_KEY not in seen


async def test_the_operators_base_url_named_in_the_payload_still_gets_the_operators_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with RecordingServer() as operators:
        operator_settings(monkeypatch, "llm", operators.url)
        await run(llm, {**PAYLOADS["llm"], "base_url": operators.url + "/"}, allow="")

    (request,) = operators.received
    assert request.headers["Authorization"] == f"Bearer {ENV_KEY}"


async def test_the_operators_base_url_on_loopback_is_trusted_without_an_allow_list(
    monkeypatch: pytest.MonkeyPatch, sim: Simulator
) -> None:
    operator_settings(monkeypatch, "search", sim.url)
    monkeypatch.setenv("DEERFLOW_SEARCH_API_KEY", KEY)

    out = json.loads(await run(search, PAYLOADS["search"], allow=""))

    assert out["results"]


@pytest.mark.parametrize("name", ["llm", "search", "crawl"])
async def test_a_payload_base_url_on_loopback_is_refused_by_default(name: str) -> None:
    async with RecordingServer() as inside:
        with pytest.raises(FatalError) as caught:
            await run(
                HANDLERS[name],
                {**PAYLOADS[name], "base_url": inside.url, "api_key": KEY},
                allow="",
            )

    assert inside.received == []
    assert "loopback" in caught.value.message and "--http-allow" in caught.value.message


async def test_a_payload_base_url_naming_the_metadata_service_is_refused() -> None:
    with pytest.raises(FatalError, match="cloud metadata"):
        await run(
            llm,
            {**PAYLOADS["llm"], "base_url": "http://169.254.169.254/latest", "api_key": KEY},
            allow="",
        )
