"""The agent's join token (issue #17 item 2): ``--join-token-file`` (its first line), else
``$DEERFLOW_JOIN_TOKEN``; sent as call metadata, never in Hello."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from deerflow_agent.main import join_token


def test_the_file_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEERFLOW_JOIN_TOKEN", "from-env")
    path = tmp_path / "join-token"
    path.write_text("from-file\n# a comment line is ignored\n")
    assert join_token(path) == "from-file"
    assert join_token(None) == "from-env"
    monkeypatch.delenv("DEERFLOW_JOIN_TOKEN")
    monkeypatch.delenv("DEERFLOW_AGENT_TOKEN", raising=False)
    assert join_token(None) == ""


def test_a_missing_or_empty_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(click.BadParameter, match="cannot read"):
        join_token(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(click.BadParameter, match="is empty"):
        join_token(empty)
