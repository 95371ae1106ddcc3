"""docs/CONFIGURATION.md is what tools/gen_config_docs.py makes of the live click commands: it is
regenerated in memory and compared, every flag must say what it means, and every environment
variable the code reads is documented."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", ROOT / "tools/gen_config_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_configuration_reference_is_up_to_date(gen: ModuleType) -> None:
    committed = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    assert committed == gen.render(), f"docs/CONFIGURATION.md is out of date: run {gen.REGENERATE}"


def _options(gen: ModuleType) -> Iterator[tuple[str, click.Option]]:
    for program in gen.programs():
        for path, command, _ in gen._commands(program.command, program.title):
            for p in command.params:
                if isinstance(p, click.Option) and not p.hidden:
                    yield path, p


def test_every_flag_says_what_it_means(gen: ModuleType) -> None:
    silent = [f"{path} {o.opts[0]}" for path, o in _options(gen) if not (o.help or "").strip()]
    assert not silent, f"give these flags a help= sentence (it is their documentation): {silent}"


def test_a_flag_added_to_a_daemon_appears_in_the_reference_with_its_default(
    gen: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deerflow_controller.main import main as controller

    before = gen.render()
    added = click.Option(["--max-queued-jobs"], default=123, type=int, help="A new limit.")
    monkeypatch.setattr(controller, "params", [*controller.params, added])
    after = gen.render()
    assert after != before
    assert "| `--max-queued-jobs` INT | `123` |  | `max-queued-jobs` | A new limit. |" in after


def test_every_environment_variable_the_code_reads_is_documented(gen: ModuleType) -> None:
    declared = {
        env
        for _, o in _options(gen)
        for env in ([o.envvar] if isinstance(o.envvar, str) else o.envvar or [])
    }
    read = set(gen.environment_read())
    undocumented = sorted(read - declared - set(gen.ENVIRONMENT))
    assert not undocumented, (
        f"describe {undocumented} in ENVIRONMENT in tools/gen_config_docs.py, then run "
        f"{gen.REGENERATE}"
    )
    stale = sorted(set(gen.ENVIRONMENT) - read)
    assert not stale, f"no code reads {stale} any more: remove them from ENVIRONMENT"


def test_the_check_mode_names_the_command_to_run(
    gen: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stale = tmp_path / "CONFIGURATION.md"
    stale.write_text("# old\n")
    monkeypatch.setattr(gen, "OUTPUT", stale)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 1
    assert "out of date: run make docs" in capsys.readouterr().err
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0
