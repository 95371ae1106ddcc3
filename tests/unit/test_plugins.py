"""Loading plugins: ``module:attr`` specs and entry-point groups, with one-sentence errors."""

from __future__ import annotations

import json
import logging
import os.path
from pathlib import Path

import pytest

from deerflow_common.plugins import load_entry_points, load_spec


def test_a_spec_names_an_attribute_of_a_module_dotted_or_not() -> None:
    assert load_spec("json:dumps", what="handler") is json.dumps
    assert load_spec(" os.path : join ", what="handler") is os.path.join
    assert load_spec("json:JSONDecoder.decode", what="handler") is json.JSONDecoder.decode


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("json.dumps", "splitter spec 'json.dumps' is not of the form module:attr"),
        ("json:a:b", "is not of the form module:attr"),
        (":dumps", "is not of the form module:attr"),
        ("no_such_module_here:f", "no module named 'no_such_module_here'; install the package"),
        ("json:nope", "module 'json' has no attribute 'nope'"),
    ],
)
def test_a_bad_spec_is_refused_in_one_sentence_naming_it(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match=r"^splitter spec ") as refused:
        load_spec(spec, what="splitter")

    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_module_that_fails_to_import_is_named_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plugin_that_raises.py").write_text("raise RuntimeError('no config file')\n")
    (tmp_path / "plugin_that_needs.py").write_text("import a_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(ValueError, match="raised RuntimeError: no config file"):
        load_spec("plugin_that_raises:f", what="handler")
    with pytest.raises(ValueError, match="needs 'a_missing_dependency', which is not installed"):
        load_spec("plugin_that_needs:f", what="handler")


def test_entry_points_load_sorted_and_a_broken_one_is_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dist = tmp_path / "widgets_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: widgets-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[deerflow.test_widgets]\n"
        "zeta = json:loads\n"
        "broken = no_such_module_here:f\n"
        "alpha = json:dumps\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    with caplog.at_level(logging.WARNING, logger="deerflow_common.plugins"):
        plugins = load_entry_points("deerflow.test_widgets", what="widget")

    assert [(p.name, p.obj) for p in plugins] == [("alpha", json.dumps), ("zeta", json.loads)]
    assert plugins[0].source == "entry point 'alpha' (json:dumps) of widgets-pkg"
    assert "skipping widget entry point 'broken' (no_such_module_here:f)" in caplog.text
