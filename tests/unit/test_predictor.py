"""The predictor: cold start, learned medians and quantiles, regression on items, agent speed,
io fraction, and the accuracy harness. Deterministic: seeded generators, a fake clock."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deerflow_bench import (
    Record,
    load_records,
    prequential_records,
    synthetic_holdout,
)
from deerflow_controller.core.predictor import (
    Features,
    HandlerDefaults,
    Predictor,
    PredictorConfig,
    features,
)

NONE = Features(0, 100)


def feed(
    p: Predictor,
    handler: str,
    n: int,
    median: float,
    sigma: float,
    *,
    agent: str = "a1",
    items: int = 0,
    seed: int = 1,
    cpu_share: float = 0.0,
) -> None:
    rng = random.Random(seed)
    for i in range(n):
        run_s = median * math.exp(rng.gauss(0.0, sigma))
        p.observe(handler, agent, Features(items, 100), run_s, cpu_share * run_s, 0, 0.0, i)


def test_cold_start_uses_the_declared_default() -> None:
    p = Predictor()
    p.declare("search", HandlerDefaults(duration_s=1.2, cpu_s=0.1, memory_bytes=1 << 20))
    est = p.predict("search", NONE)
    assert est.duration_s == pytest.approx(1.2)
    assert est.p90_s > est.duration_s * 1.5  # unsure before data: a wide p90
    assert est.cpu_s == pytest.approx(0.1)
    assert est.memory_bytes == 1 << 20
    assert est.samples == 0


def test_declared_default_of_an_items_handler_is_per_item() -> None:
    p = Predictor()
    p.declare("crawl", HandlerDefaults(duration_s=0.5, items_field="urls"))
    assert p.predict("crawl", Features(10, 500)).duration_s == pytest.approx(5.0)
    assert p.predict("crawl", Features(1, 50)).duration_s == pytest.approx(0.5)


def test_unknown_handler_uses_the_hint_then_the_fallback() -> None:
    p = Predictor()
    assert p.predict("new", NONE, hint_s=7.0).duration_s == pytest.approx(7.0)
    assert p.predict("new", NONE).duration_s == pytest.approx(p.config.fallback_duration_s)


def test_the_hint_beats_the_declared_default_until_the_handler_is_observed() -> None:
    p = Predictor()
    p.declare("agent", HandlerDefaults(duration_s=60.0))
    assert p.predict("agent", NONE, hint_s=1800.0).duration_s == pytest.approx(1800.0)
    feed(p, "agent", 50, median=30.0, sigma=0.2)
    assert p.predict("agent", NONE, hint_s=1800.0).duration_s == pytest.approx(30.0, rel=0.1)


def test_observations_overwhelm_a_wrong_default() -> None:
    p = Predictor()
    p.declare("llm", HandlerDefaults(duration_s=10.0))
    feed(p, "llm", 200, median=2.0, sigma=0.5)
    est = p.predict("llm", NONE, "a1")
    assert est.duration_s == pytest.approx(2.0, rel=0.1)
    assert est.p90_s == pytest.approx(2.0 * math.exp(1.2816 * 0.5), rel=0.15)
    assert est.sigma == pytest.approx(0.5, rel=0.15)
    assert est.samples == 200


def test_a_few_samples_replace_the_default_but_keep_a_wide_spread() -> None:
    p = Predictor()
    p.declare("llm", HandlerDefaults(duration_s=10.0))
    for i in range(3):
        p.observe("llm", "a1", NONE, 2.0, 0.0, 0, 0.0, i)
    est = p.predict("llm", NONE)
    assert 2.0 < est.duration_s < 10.0  # three pseudo-observations of the prior, three of data
    assert est.sigma > 0.3


def test_regression_learns_that_duration_scales_with_items() -> None:
    p = Predictor()
    p.declare("crawl", HandlerDefaults(duration_s=2.0, items_field="urls"))  # 4x too slow
    rng = random.Random(3)
    for i in range(300):
        items = rng.randint(1, 20)
        run_s = 0.5 * items * math.exp(rng.gauss(0.0, 0.3))
        p.observe("crawl", "a1", Features(items, 40 * items), run_s, 0.0, 0, 0.0, i)
    assert p.predict("crawl", Features(10, 400), "a1").duration_s == pytest.approx(5.0, rel=0.15)
    assert p.predict("crawl", Features(2, 80), "a1").duration_s == pytest.approx(1.0, rel=0.15)
    cost = p.item_cost("crawl")
    assert cost.per_item_s == pytest.approx(0.5, rel=0.2)
    assert cost.samples > 0


def test_a_half_speed_agent_is_recognised_as_about_half() -> None:
    p = Predictor()
    rng = random.Random(5)
    for i in range(1000):
        agent = "slow" if i % 2 else "fast"
        run_s = (2.0 if agent == "slow" else 1.0) * math.exp(rng.gauss(0.0, 0.4))
        p.observe("search", agent, NONE, run_s, 0.0, 0, 0.0, i)
    assert p.agent_speed("fast") == pytest.approx(1.0)
    assert p.agent_speed("slow") == pytest.approx(0.5, abs=0.08)
    assert p.handler_speed("search", "slow") == pytest.approx(0.5, abs=0.08)
    # Per agent, the estimate is that agent's median; without one, the fastest agent's.
    assert p.predict("search", NONE, "slow").duration_s == pytest.approx(2.0, rel=0.15)
    assert p.predict("search", NONE, "fast").duration_s == pytest.approx(1.0, rel=0.15)
    assert p.predict("search", NONE).duration_s == pytest.approx(1.0, rel=0.15)
    # An agent never seen is assumed typical of the pool: between the two.
    assert 0.5 < p.agent_speed("new") < 1.0


def test_speed_resists_rare_hangs() -> None:
    p = Predictor()
    rng = random.Random(8)
    for i in range(1000):
        agent = "slow" if i % 2 else "fast"
        run_s = (2.0 if agent == "slow" else 1.0) * math.exp(rng.gauss(0.0, 0.3))
        if agent == "fast" and i % 40 == 0:
            run_s = 600.0  # a hung provider call, as docs/WORKLOAD.md reports for LLMs
        p.observe("llm", agent, NONE, run_s, 0.0, 0, 0.0, i)
    assert p.agent_speed("fast") == 1.0
    assert p.agent_speed("slow") == pytest.approx(0.5, abs=0.08)


def test_a_warm_handler_learns_at_most_its_budget_per_second() -> None:
    cfg = PredictorConfig(window=16, fit_min_samples=8, learn_burst=4, max_learn_rate_per_s=10)
    p = Predictor(cfg)
    for _ in range(16):  # cold: every observation learns, whatever the rate
        p.observe("echo", "a1", NONE, 0.001, 0.0, 0, 0.0, 0.0)
    assert p.samples("echo") == 16
    for _ in range(10):  # one batch at one instant: the burst learns, the rest is dropped
        p.observe("echo", "a1", NONE, 0.001, 0.0, 0, 0.0, 100.0)
    assert p.samples("echo") == 20
    for _ in range(10):  # 0.2 s later: 10/s refills two
        p.observe("echo", "a1", NONE, 0.001, 0.0, 0, 0.0, 100.2)
    assert p.samples("echo") == 22


def test_forgetting_the_fastest_agent_moves_the_reference() -> None:
    p = Predictor()
    for i in range(400):
        agent = "slow" if i % 2 else "fast"
        p.observe("search", agent, NONE, 2.0 if agent == "slow" else 1.0, 0.0, 0, 0.0, i)
    p.forget_agent("fast")
    assert p.agent_speed("slow") == pytest.approx(1.0)


def test_io_fraction_comes_from_the_wall_to_cpu_ratio() -> None:
    p = Predictor()
    assert p.io_fraction("unknown") == 1.0
    p.declare("python", HandlerDefaults(duration_s=0.4, cpu_bound=True))
    assert p.io_fraction("python") == 0.0
    feed(p, "search", 50, median=1.0, sigma=0.3, cpu_share=0.05)
    assert p.io_fraction("search") == pytest.approx(0.95, abs=0.01)
    feed(p, "hash", 50, median=1.0, sigma=0.3, cpu_share=0.9)
    assert p.io_fraction("hash") == pytest.approx(0.1, abs=0.01)
    assert p.predict("hash", NONE).cpu_s == pytest.approx(0.9 * p.predict("hash", NONE).duration_s)


def test_memory_and_tokens_are_learned_medians() -> None:
    p = Predictor()
    p.declare("llm", HandlerDefaults(duration_s=1.0, tokens=100.0))
    for i in range(100):
        p.observe("llm", "a1", NONE, 1.0, 0.0, 64 << 20, 2000.0, i)
    est = p.predict("llm", NONE)
    # The declared 100 is worth three observations against a hundred: it has all but faded.
    assert est.tokens == pytest.approx(2000.0, rel=0.1)
    assert est.memory_bytes == pytest.approx(64 << 20, rel=0.01)


def test_redeclaring_a_learned_handler_keeps_what_was_learned() -> None:
    p = Predictor()
    feed(p, "search", 100, median=3.0, sigma=0.2)
    p.declare("search", HandlerDefaults(duration_s=0.1))
    assert p.predict("search", NONE).duration_s == pytest.approx(3.0, rel=0.1)


def test_unknown_run_times_are_ignored() -> None:
    p = Predictor()
    p.observe("search", "a1", NONE, 0.0, 0.0, 0, 0.0, 0.0)
    assert p.samples("search") == 0


def test_features_parse_json_only_for_handlers_with_items() -> None:
    payload = json.dumps({"urls": ["a", "b", "c"]}).encode()
    assert features(payload, "urls") == Features(3, len(payload))
    assert features(payload, "") == Features(0, len(payload))
    assert features(b"not json at all", "urls") == Features(0, 15)
    assert features(b"{broken", "urls") == Features(0, 7)
    assert features(b'{"urls": "one"}', "urls").items == 0
    assert features(b"", "urls") == Features(0, 0)


def test_held_out_synthetic_run_is_predicted_near_the_noise_floor() -> None:
    result = synthetic_holdout(train_n=2000, test_n=1000, seed=11)
    assert result["mdape"]["all"] < result["mdape_oracle"] * 1.15
    assert result["mdape"]["all"] < result["mdape_cold_start"]["all"]
    assert result["agent_speed"]["agent-slow"] == pytest.approx(0.5, abs=0.1)


def test_records_from_a_real_run_are_read_and_scored(tmp_path: Path) -> None:
    rng = random.Random(2)
    path = tmp_path / "run.jsonl"
    rows = [
        Record("search", "a1", 0, 200, 1.5 * math.exp(rng.gauss(0, 0.3)), time=float(i))
        for i in range(300)
    ]
    path.write_text("\n".join(r.to_json() for r in rows) + "\n")
    loaded = load_records(path)
    assert loaded == rows
    result = prequential_records(loaded, warmup=20)
    assert result["mdape"]["search"] < 0.35  # oracle for sigma 0.3 is about 0.2


def test_a_malformed_record_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"handler": "x", "run_s": 1}\n{"handler": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_records(path)


def test_learning_item_costs_never_imports_numpy_ma_on_the_event_loop() -> None:
    """np.median's first call imports numpy.ma (0.05-0.2 s of CPU); the predictor's median
    must not, and must agree with it."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from deerflow_controller.core.predictor import _median\n"
        "for n in range(1, 12):\n"
        "    a = np.arange(float(n))[::-1] ** 2\n"
        "    assert _median(a) == float(np.sort(a)[(n - 1) // 2:n // 2 + 1].mean()), n\n"
        "print('numpy.ma' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@settings(max_examples=200, deadline=None)
@given(
    declared=st.sampled_from([None, 0.0, 2.5]),
    items_field=st.booleans(),
    observations=st.lists(
        st.tuples(
            st.sampled_from(["a1", "a2"]),
            st.integers(0, 50),
            st.integers(0, 10_000),
            st.floats(1e-4, 100.0),
        ),
        max_size=40,
    ),
    asked=st.tuples(st.integers(0, 50), st.integers(0, 10_000)),
    hint_s=st.sampled_from([0.0, 0.3, 7.0]),
)
def test_the_cores_duration_is_the_estimates_duration(
    declared: float | None,
    items_field: bool,
    observations: list[tuple[str, int, int, float]],
    asked: tuple[int, int],
    hint_s: float,
) -> None:
    """The core asks ``duration`` for every task it queues; it is the estimate's duration,
    exactly, cold or learned, with or without a hint."""
    p = Predictor(PredictorConfig(fit_min_samples=4))
    if declared is not None:
        p.declare(
            "h", HandlerDefaults(duration_s=declared, items_field="items" if items_field else "")
        )
    for i, (agent, items, size, run_s) in enumerate(observations):
        p.observe("h", agent, Features(items, size), run_s, 0.0, 0, 0.0, float(i))
    f = Features(*asked)
    for handler in ("h", "never-seen"):
        assert p.duration(handler, f, hint_s) == p.predict(handler, f, hint_s=hint_s).duration_s
