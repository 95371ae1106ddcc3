"""Issue #17, item 5: the ``http`` handler goes only where the agent's address policy allows.

A task's URL is untrusted. By default the agent refuses loopback, link-local, cloud metadata,
unspecified and private addresses, judged on the address it actually connects to (so a name
resolving to loopback and a redirect to a forbidden address are refused too), and only http(s).
Real servers on loopback addresses record what reached them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from click.testing import CliRunner

from deerflow_agent import FatalError, HandlerEnvironment
from deerflow_agent._config import AgentConfig
from deerflow_agent._http import close_http_session
from deerflow_agent._netpolicy import AddressPolicy
from deerflow_agent.builtins import http
from deerflow_agent.main import main
from tests.recording_server import RecordingServer


@pytest.fixture(autouse=True)
async def shared_sessions() -> AsyncIterator[None]:
    """Close the agent's HTTP sessions on the test's own loop."""
    yield
    await close_http_session()


async def get(url: str, *, allow: str = "") -> dict[str, object]:
    env = HandlerEnvironment(http_allow=allow)
    out: dict[str, object] = json.loads(await env.run(http, json.dumps({"url": url}).encode()))
    return out


async def refused(url: str, *, allow: str = "") -> str:
    with pytest.raises(FatalError) as caught:
        await get(url, allow=allow)
    return caught.value.message


async def test_a_loopback_url_is_refused_by_default_naming_the_setting_that_allows_it() -> None:
    async with RecordingServer() as server:
        message = await refused(f"{server.url}/admin")

    assert server.received == []
    assert "loopback" in message and "--http-allow 127.0.0.1/32" in message
    assert "DEERFLOW_HTTP_ALLOW" in message


async def test_a_loopback_url_is_fetched_when_the_allow_list_names_it() -> None:
    async with RecordingServer() as server:
        out = await get(f"{server.url}/page", allow="127.0.0.1/32")

    assert out["status"] == 200
    assert [r.path for r in server.received] == ["/page"]


async def test_a_name_that_resolves_to_loopback_is_refused_on_the_address_it_resolves_to() -> None:
    # The name says nothing; the address connected to does. An allow-list that names another
    # loopback address lets nothing through to 127.0.0.1.
    async with RecordingServer() as server:
        message = await refused(f"http://localhost:{server.port}/", allow="127.0.0.2/32")

    assert server.received == []
    assert "loopback" in message


async def test_a_redirect_to_a_forbidden_address_is_refused_before_connecting_to_it() -> None:
    async with RecordingServer("127.0.0.2") as inside, RecordingServer() as outside:
        target = f"{inside.url}/secret"
        message = await refused(f"{outside.url}/redirect?to={target}", allow="127.0.0.1/32")

    assert [r.path.split("?")[0] for r in outside.received] == ["/redirect"]
    assert inside.received == []
    assert "redirected to 127.0.0.2" in message and "--http-allow 127.0.0.2/32" in message


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "cloud metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        ("http://169.254.10.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[::1]:2379/v3/kv/range", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://0x7f.1:9/", "loopback"),  # a name to the parser; the resolver says 127.0.0.1
        ("http://0.0.0.0:7400/", "unspecified"),
        ("http://[::]:7400/", "unspecified"),
        ("http://10.0.0.5/", "private"),
        ("http://192.168.1.1/", "private"),
    ],
)
async def test_metadata_link_local_unspecified_and_private_addresses_are_refused(
    url: str, why: str
) -> None:
    assert f" {why} address" in await refused(url)


async def test_the_metadata_address_stays_refused_when_only_loopback_is_allowed() -> None:
    assert "cloud metadata" in await refused("http://169.254.169.254/", allow="127.0.0.0/8")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/", "gopher://x:70/"])
async def test_schemes_other_than_http_and_https_are_refused(url: str) -> None:
    assert "must be an http(s) URL" in await refused(url)


async def test_a_refused_url_does_not_echo_a_key_from_its_query_or_its_user_info() -> None:
    message = await refused("http://user:hunter2-pass@127.0.0.1:9/x?api_key=sk-QUERYKEY-123")

    assert "sk-QUERYKEY-123" not in message and "hunter2-pass" not in message


def test_an_allow_list_entry_that_is_not_a_network_is_refused_with_a_sentence() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an IP network"):
        AgentConfig(http_allow=("10.0.0.0/33",))
    result = CliRunner().invoke(main, ["--http-allow", "127.0.0.1/32,nope"])
    assert result.exit_code == 2
    assert "'nope' is not an IP network" in result.output


def test_the_allow_list_is_read_from_the_environment_too() -> None:
    # A bad value in the variable is reported like the flag's, before anything starts.
    result = CliRunner().invoke(main, [], env={"DEERFLOW_HTTP_ALLOW": "bad"})
    assert result.exit_code == 2 and "'bad' is not an IP network" in result.output


def test_ipv6_forms_of_an_ipv4_address_are_judged_as_that_address() -> None:
    policy = AddressPolicy.parse("127.0.0.1/32")
    assert policy.why_refused("::ffff:127.0.0.1") is None
    assert policy.why_refused("127.0.0.2") == "loopback"
    assert policy.why_refused("93.184.215.14") is None  # public
    assert AddressPolicy().why_refused("64:ff9b::a9fe:a9fe") == "cloud metadata"  # NAT64
    assert AddressPolicy().why_refused("2002:7f00:1::") == "loopback"  # 6to4
