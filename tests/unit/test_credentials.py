"""The credentials file (``--auth-file``, issue #17 item 2): its format, the one-line errors
naming file, line and key, matching by digest, reloads, and ``deerflow token new``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from click.testing import CliRunner

from deerflow_controller.cli import main as cli
from deerflow_controller.service.credentials import (
    AuthFileError,
    Credentials,
    Role,
    digest,
    parse,
)
from deerflow_controller.service.exposure import exposure_problem, is_loopback
from tests.auth_files import Tokens, auth_toml, write_atomically


def test_tokens_map_to_their_principal_and_nothing_else_matches() -> None:
    t = Tokens()
    creds = parse(auth_toml(t), "auth.toml")
    alice = creds.client_by_token(t.alice)
    assert alice is not None and (alice.name, alice.tenant, alice.role) == ("alice", "a", Role.USER)
    admin = creds.client_by_token(t.admin)
    assert admin is not None and admin.admin
    assert creds.agent_by_token(t.join) is not None
    # A join token is not a client token, nor the other way round; nor a digest, nor nothing.
    assert creds.client_by_token(t.join) is None
    assert creds.agent_by_token(t.alice) is None
    assert creds.client_by_token(digest(t.alice)) is None
    assert creds.client_by_token("") is None
    assert creds.client_by_token(t.wrong) is None
    assert creds.client_by_token("x" * 100_000) is None


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            '[[client]]\nname = "a"\nrole = "user"\nsha256 = "' + "0" * 64 + '"\n',
            "line 1 ([[client]] #1): key 'tenant' is missing",
        ),
        (
            '\n\n[[client]]\nname = "a"\ntenant = "t"\nsha256 = "secret-token"\n',
            "line 3 ([[client]] #1): key 'sha256'",
        ),
        (
            '[[client]]\nname = "a"\ntenant = "t"\nrole = "root"\nsha256 = "' + "0" * 64 + '"\n',
            "line 1 ([[client]] #1): key 'role'",
        ),
        (
            '[[agent]]\nname = "a"\n',
            "line 1 ([[agent]] #1): key 'sha256' (or 'identity') is missing",
        ),
        ('[[agent]]\nname = "a"\ntoken = "x"\n', "line 1 ([[agent]] #1): unknown key 'token'"),
        ('[client]\nname = "a"\n', "'client' must be [[client]] entries"),
        ("[[client]\n", "not valid TOML"),
        ("[users]\n", "unknown table 'users'"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_line_and_key(text: str, where: str) -> None:
    with pytest.raises(AuthFileError) as caught:
        parse(text, "/etc/deerflow/auth.toml")
    message = str(caught.value)
    assert message.startswith("/etc/deerflow/auth.toml") and where in message, message
    assert "\n" not in message


def test_a_rewritten_file_is_reloaded_and_a_broken_one_keeps_the_old(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t = Tokens()
    path = tmp_path / "auth.toml"
    write_atomically(path, auth_toml(t))
    creds = Credentials(path)
    assert creds.current().client_by_token(t.alice) is not None
    write_atomically(path, auth_toml(t, clients={"bob": (t.bob, "b", "user")}))
    assert creds.current().client_by_token(t.alice) is None  # revoked at the next call
    assert creds.current().client_by_token(t.bob) is not None
    with caplog.at_level(logging.ERROR):
        write_atomically(path, "[[client]\n")
        for _ in range(3):
            assert creds.current().client_by_token(t.bob) is not None
    assert len([r for r in caplog.records if "keeping the credentials" in r.message]) == 1
    creds.add_agent_token("local-agents", "ephemeral")
    assert creds.current().agent_by_token("ephemeral") is not None


def test_listeners_hear_of_a_reload_only_when_the_credentials_changed(tmp_path: Path) -> None:
    t = Tokens()
    path = tmp_path / "auth.toml"
    write_atomically(path, auth_toml(t))
    creds = Credentials(path)
    heard: list[int] = []
    creds.on_change(lambda now: heard.append(len(now.clients)))
    write_atomically(path, auth_toml(t))  # the same entries, a new file: read, nothing changed
    assert creds.reload() and creds.reload(force=True) and heard == []
    write_atomically(path, "[[client]\n")  # broken: the old ones stay, nothing changed
    assert not creds.reload() and heard == []
    write_atomically(path, auth_toml(t, clients={"bob": (t.bob, "b", "user")}))
    assert creds.reload() and heard == [1]


def test_a_missing_file_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(AuthFileError, match="cannot read it"):
        Credentials(tmp_path / "nope.toml")


def test_token_new_prints_a_token_and_the_lines_that_admit_it() -> None:
    result = CliRunner().invoke(cli, ["token", "new", "--tenant", "research", "--admin"])
    assert result.exit_code == 0, result.output
    token = result.stderr.rsplit(": ", 1)[1].strip()
    assert token not in result.stdout  # only its digest goes to the file
    creds = parse(result.stdout, "auth.toml")
    who = creds.client_by_token(token)
    assert who is not None and who.admin and who.tenant == "research"
    agent = CliRunner().invoke(cli, ["token", "new", "--agent"])
    join = agent.stderr.rsplit(": ", 1)[1].strip()
    assert parse(agent.stdout, "auth.toml").agent_by_token(join) is not None
    refused = CliRunner().invoke(cli, ["token", "new"])
    assert refused.exit_code == 2 and "--tenant" in refused.output


def test_only_loopback_is_open_without_credentials() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "::", "10.0.0.5", "example.com"))
    assert exposure_problem(["127.0.0.1", "127.0.0.1"], auth=False, insecure=False) is None
    problem = exposure_problem(["127.0.0.1", "0.0.0.0"], auth=False, insecure=False)
    assert problem is not None and "--auth-file" in problem and "--insecure" in problem
    assert exposure_problem(["0.0.0.0"], auth=True, insecure=False) is None
    assert exposure_problem(["0.0.0.0"], auth=False, insecure=True) is None


def test_an_mtls_identity_listed_in_the_file_admits_an_agent_without_a_token(
    tmp_path: Path,
) -> None:
    from deerflow_controller.service.auth import AuthInterceptor, _Refusal

    path = tmp_path / "auth.toml"
    write_atomically(path, '[[agent]]\nname = "node-7"\nidentity = "agent-7.example"\n')
    seen: dict[str, str | None] = {"identity": "agent-7.example"}
    auth = AuthInterceptor(Credentials(path), peer_identity=lambda context: seen["identity"])
    connect = "/deerflow.v1.AgentService/Connect"
    who = auth.check(connect, "", object())
    assert who.name == "node-7" and who.role is Role.AGENT
    for identity in ("agent-8.example", "agent-7.exampl\u00e9", None):
        seen["identity"] = identity
        with pytest.raises(_Refusal) as refused:
            auth.check(connect, "", object())
        assert "client certificate" in refused.value.message


def test_the_controller_refuses_a_bad_auth_file_in_one_line_before_starting(tmp_path: Path) -> None:
    from deerflow_controller.main import main as controller

    path = tmp_path / "auth.toml"
    path.write_text(
        '[[agent]]\nname = "pool"\nsha256 = "' + "0" * 64 + '"\n\n[[client]]\nname = "x"\n'
    )
    result = CliRunner().invoke(controller, ["--auth-file", str(path), "--http-port", "0"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"deerflow-controller: {path} line 5 ([[client]] #1): key 'sha256' is missing\n"
    )


def test_a_changed_file_ends_the_streams_it_no_longer_admits_as_before_and_only_those(
    tmp_path: Path,
) -> None:
    from deerflow_controller.service.auth import AuthInterceptor
    from deerflow_controller.service.open_streams import OpenStream

    t = Tokens()
    node7 = '\n[[agent]]\nname = "node-7"\nidentity = "agent-7.example"\n'
    path = tmp_path / "auth.toml"
    write_atomically(path, auth_toml(t) + node7)
    auth = AuthInterceptor(Credentials(path))
    connect, watch = "/deerflow.v1.AgentService/Connect", "/deerflow.v1.JobService/WatchJob"
    opened = {
        "pool": (connect, t.join, None),
        "node-7": (connect, "", "agent-7.example"),
        "alice": (watch, t.alice, None),
        "bob": (watch, t.bob, None),
        "root": (watch, t.admin, None),
    }
    streams = {}
    for name, (method, token, identity) in opened.items():
        who = auth.admission(method, token, identity, auth.credentials.current())
        # What the registry holds besides is the live call (its context and task): not read.
        streams[name] = OpenStream(method, token, identity, who, cast(Any, None), cast(Any, None))
    # node-7's identity leaves, alice moves to tenant c, bob becomes a metrics scraper.
    changed = auth_toml(
        t,
        clients={
            "alice": (t.alice, "c", "user"),
            "bob": (t.bob, "", "metrics"),
            "root": (t.admin, "ops", "admin"),
        },
    )
    creds = parse(changed, "auth.toml")
    verdicts = {name: auth.verdict(stream, creds) for name, stream in streams.items()}
    assert verdicts["pool"] is None and verdicts["root"] is None
    assert verdicts["node-7"] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "this agent's certificate identity (entry 'node-7') was removed from the controller's "
        "auth file while its stream was open; list it again, or give the agent a join token "
        "(`deerflow token new --agent`)",
    )
    alice, bob = verdicts["alice"], verdicts["bob"]
    assert alice is not None and alice[0] is grpc.StatusCode.UNAUTHENTICATED
    assert "was changed (now tenant 'c', role 'user')" in alice[1]
    assert bob is not None and bob[0] is grpc.StatusCode.PERMISSION_DENIED
    assert "was changed (now role 'metrics')" in bob[1]
