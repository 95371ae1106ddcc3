"""Building a SimConfig from JSON, and the CLI's key specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deerflow_simulator import KeyLimits, LatencyModel, SimConfig, parse_key_spec


def test_from_dict_builds_keys_and_latencies() -> None:
    config = SimConfig.from_dict(
        {
            "keys": {"llm": {"rpm": 500, "tpm": 200000, "concurrency": 8, "burst_slope": 0.5}},
            "time_scale": 0.01,
            "latencies": {"crawl": {"median_s": 2, "sigma": 0.1}, "llm_tokens_per_s": 80},
        }
    )
    assert config.keys["llm"] == KeyLimits(rpm=500, tpm=200000, concurrency=8, burst_slope=0.5)
    assert config.time_scale == 0.01
    assert config.latencies.crawl == LatencyModel(2.0, 0.1)
    assert config.latencies.llm_tokens_per_s == 80
    assert config.latencies.search_basic == LatencyModel(1.2, 0.5)  # defaults kept


def test_defaults_follow_the_workload() -> None:
    config = SimConfig()
    assert config.latencies.llm_first_token == LatencyModel(0.8, 0.6)
    assert config.latencies.search_advanced == LatencyModel(3.0, 0.5)
    assert config.latencies.crawl == LatencyModel(5.5, 0.7)
    assert (config.unknown_key_status, config.crawl_empty_rate) == (401, 0.15)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"keys": {"k": {"rpn": 5}}}, "keys['k']: unknown field 'rpn'"),
        ({"keys": {"k": {"rpm": -5}}}, "keys['k']: rpm must be > 0"),
        ({"keys": {"k": {"concurrency": 1.5}}}, "keys['k'].concurrency must be an integer"),
        ({"keys": {"k": {"rpm": "fast"}}}, "keys['k'].rpm must be a number"),
        ({"keys": {"k": {"burst_slope": 1, "burst_floor_rps": 0.5}}}, "idle key can start"),
        ({"error_rate": 2}, "error_rate must be between 0 and 1"),
        ({"time_scale": True}, "time_scale must be a number"),
        ({"latencies": {"crawl": {"median_s": 1}}}, "latencies.crawl needs median_s and sigma"),
        ({"timescale": 1}, "config: unknown field 'timescale'"),
        ({"unknown_key_status": 200}, "unknown_key_status must be a 4xx"),
    ],
)
def test_from_dict_names_the_bad_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SimConfig.from_dict(data)


def test_from_json_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    path.write_text(json.dumps({"keys": {"k": {"rpm": 60}}, "seed": 7}))
    config = SimConfig.from_json(path)
    assert (config.keys["k"].rpm, config.seed) == (60, 7)


def test_from_json_reports_invalid_json_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    path.write_text("{keys: }")
    with pytest.raises(ValueError, match=r"sim\.json is not valid JSON"):
        SimConfig.from_json(path)


def test_a_key_spec_parses_limits_and_aliases() -> None:
    name, limits = parse_key_spec("sim-key=rpm:6000,tpm:2000000,concurrency:200,slope:0.5")
    assert name == "sim-key"
    assert limits == KeyLimits(rpm=6000, tpm=2_000_000, concurrency=200, burst_slope=0.5)
    assert parse_key_spec("open") == ("open", KeyLimits())
    assert parse_key_spec("k=slope:1,floor:4,window:2")[1].burst_floor_rps == 4


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("k=rpm:fast", "rpm 'fast' is not a number"),
        ("k=concurrency:2.5", "concurrency '2.5' is not an integer"),
        ("k=rpm", "'rpm' is not field:value"),
        ("=rpm:5", "has no key name"),
        ("k=qps:5", "unknown field 'qps'"),
    ],
)
def test_a_bad_key_spec_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_key_spec(spec)
