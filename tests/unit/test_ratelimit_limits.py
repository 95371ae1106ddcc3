"""LimiterConfig: limits per key pattern, read from a mapping or a TOML file, with clear errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from deerflow_controller.ratelimit import DEFAULT_UNKNOWN, KeyLimits, LimiterConfig

KNOWN = (
    "adaptive, burst_floor_rps, burst_jitter_s, burst_s, burst_slope, burst_window_s, concurrency, "
    "default_tokens, initial_concurrency, initial_rps, max_concurrency, rpm, safety, tpm"
)


def test_an_unknown_key_gets_the_conservative_default() -> None:
    limits = LimiterConfig().limits_for("search/tavily")

    assert limits == DEFAULT_UNKNOWN
    assert limits.rpm is None
    assert limits.tpm is None
    assert limits.concurrency is None
    assert limits.adaptive is True
    assert limits.initial_rps == 5.0
    assert limits.initial_concurrency == 8
    assert limits.safety == 0.98
    assert limits.burst_s == 0.5


def test_the_first_matching_pattern_wins() -> None:
    config = LimiterConfig.from_dict(
        {
            "keys": [
                {"pattern": "llm/openai/*", "rpm": 500, "tpm": 200_000},
                {"pattern": "llm/*", "rpm": 100},
                {"pattern": "llm/openai/gpt-4o", "rpm": 1},
            ]
        }
    )

    assert config.limits_for("llm/openai/gpt-4o") == KeyLimits(rpm=500, tpm=200_000)
    assert config.limits_for("llm/ark/doubao") == KeyLimits(rpm=100)
    assert config.limits_for("search/tavily") == DEFAULT_UNKNOWN


def test_patterns_match_case_sensitively_and_whole_keys_only() -> None:
    config = LimiterConfig.from_dict({"keys": [{"pattern": "llm/*", "rpm": 100}]})

    assert config.limits_for("LLM/openai") == DEFAULT_UNKNOWN
    assert config.limits_for("x/llm/openai") == DEFAULT_UNKNOWN
    assert config.limits_for("llm/openai").rpm == 100


def test_the_default_section_sets_the_limits_of_unmatched_keys() -> None:
    config = LimiterConfig.from_dict(
        {
            "default": {"initial_rps": 2.0, "adaptive": False, "concurrency": 4},
            "keys": [{"pattern": "crawl/*", "rpm": 20}],
        }
    )

    assert config.limits_for("search/ddg") == KeyLimits(
        initial_rps=2.0, adaptive=False, concurrency=4
    )
    assert config.limits_for("crawl/jina") == KeyLimits(rpm=20)


def test_a_toml_file_is_read_from_its_ratelimit_section(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        """
[ratelimit.default]
initial_rps = 1.5

[[ratelimit.keys]]
pattern = "crawl/jina/*"
rpm = 20
concurrency = 2
adaptive = false

[[ratelimit.keys]]
pattern = "llm/ark/*"
rpm = 600
burst_slope = 0.5
burst_floor_rps = 4.0
""",
        encoding="utf-8",
    )

    config = LimiterConfig.from_toml(path)

    assert config.limits_for("crawl/jina/free") == KeyLimits(rpm=20, concurrency=2, adaptive=False)
    assert config.limits_for("llm/ark/doubao") == KeyLimits(
        rpm=600, burst_slope=0.5, burst_floor_rps=4.0
    )
    assert config.limits_for("search/tavily") == KeyLimits(initial_rps=1.5)


def test_a_toml_file_without_a_ratelimit_section_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text('[other]\nname = "x"\n', encoding="utf-8")

    config = LimiterConfig.from_toml(path)

    assert config == LimiterConfig()
    assert config.limits_for("llm/x") == DEFAULT_UNKNOWN


def test_an_unknown_setting_is_rejected_naming_it_and_the_known_ones() -> None:
    doc = {"keys": [{"pattern": "llm/*", "rmp": 500, "burst": 1}]}

    with pytest.raises(ValueError) as caught:
        LimiterConfig.from_dict(doc)

    assert str(caught.value) == (
        f"config: [[ratelimit.keys]] #1: unknown setting(s) burst, rmp; known: {KNOWN}"
    )


def test_an_unknown_setting_in_the_default_section_is_rejected() -> None:
    with pytest.raises(ValueError, match=re.escape("config: [ratelimit.default]: unknown")):
        LimiterConfig.from_dict({"default": {"pattern": "*"}})


def test_an_error_in_a_toml_file_names_the_file_and_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        '[[ratelimit.keys]]\npattern = "a/*"\nrpm = 1\n\n'
        '[[ratelimit.keys]]\npattern = "b/*"\nrpm = "fast"\n',
        encoding="utf-8",
    )

    with pytest.raises(ValueError) as caught:
        LimiterConfig.from_toml(path)

    assert str(caught.value) == (
        f"{path}: [[ratelimit.keys]] #2: 'rpm' must be a non-negative number, got 'fast'"
    )


@pytest.mark.parametrize(
    ("entry", "position"),
    [
        ({"rpm": 5}, 1),
        ({"pattern": 5, "rpm": 5}, 1),
        ("llm/*", 1),
    ],
)
def test_a_key_entry_without_a_string_pattern_is_rejected(entry: Any, position: int) -> None:
    with pytest.raises(ValueError) as caught:
        LimiterConfig.from_dict({"keys": [entry]})

    assert str(caught.value) == (
        f"config: [[ratelimit.keys]] #{position} needs a string 'pattern' such as \"llm/my-key/*\""
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("rpm", "500"), ("tpm", -1), ("concurrency", True), ("safety", None), ("burst_s", [1])],
)
def test_a_limit_that_is_not_a_non_negative_number_is_rejected(name: str, value: Any) -> None:
    with pytest.raises(ValueError) as caught:
        LimiterConfig.from_dict({"keys": [{"pattern": "p", name: value}]})

    assert str(caught.value) == (
        f"config: [[ratelimit.keys]] #1: {name!r} must be a non-negative number, got {value!r}"
    )


@pytest.mark.parametrize("value", [1, "true", None])
def test_adaptive_must_be_true_or_false(value: Any) -> None:
    with pytest.raises(ValueError) as caught:
        LimiterConfig.from_dict({"default": {"adaptive": value}})

    assert str(caught.value) == "config: [ratelimit.default]: 'adaptive' must be true or false"


def test_the_where_argument_names_the_source_in_errors() -> None:
    with pytest.raises(ValueError, match=re.escape("--limits flag: [ratelimit.default]: 'rpm'")):
        LimiterConfig.from_dict({"default": {"rpm": "x"}}, where="--limits flag")


def test_integer_and_float_settings_are_kept_as_given() -> None:
    config = LimiterConfig.from_dict(
        {"keys": [{"pattern": "p", "rpm": 500, "safety": 0.9, "concurrency": 2}]}
    )

    limits = config.limits_for("p")
    assert limits.rpm == 500
    assert limits.safety == 0.9
    assert limits.concurrency == 2
    assert limits.tpm is None
