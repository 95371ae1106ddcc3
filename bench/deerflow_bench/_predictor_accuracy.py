"""`deerflow bench predictor`: how accurate the predictor is, and what it costs per call.

Accuracy is the median absolute percentage error (MdAPE) of the predicted median duration
against the actual run time, per attempt, with the agent known (as the balancer and timeouts
use it). Two ways to measure it:

- **Held-out synthetic run** (:func:`synthetic_holdout`): train on one generated run, evaluate
  on another with a different seed, no learning during evaluation. Two handlers shaped like
  DeerFlow's (docs/WORKLOAD.md): ``crawl`` with a list of URLs (log-normal, median growing with the
  item count) and ``llm`` (median growing with prompt size), on two agents, one half as fast.
  Beside the model it reports the cold start (declared defaults only) and the *oracle* floor: the
  error of the true median itself, which no predictor can beat on log-normal noise.
- **A real run** (:func:`holdout_records`, :func:`prequential_records`): feed it the records of a
  run (JSON lines, see :class:`Record`), split in time (train on the first part, evaluate on the
  rest) or prequentially (predict each attempt before learning from it, the way the controller
  experiences it).

Per-call costs (predictor, and the balancer's placement over 2 and 32 busy agents) are measured
with ``timeit`` on a warm model.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import timeit
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from deerflow_controller.core.balancer import Balancer
from deerflow_controller.core.model import AgentView, Job, Task, TaskSpec
from deerflow_controller.core.predictor import Features, HandlerDefaults, Predictor, features

__all__ = [
    "Record",
    "holdout_records",
    "load_records",
    "per_call_costs",
    "prequential_records",
    "run",
    "synthetic_holdout",
    "synthetic_run",
]


class Record(NamedTuple):
    """One finished attempt, as the predictor sees it. One JSON object per line in a file:
    ``{"handler", "agent_id", "items", "size", "run_s", "cpu_s", "rss_bytes", "tokens",
    "time"}`` (missing numbers are 0)."""

    handler: str
    agent_id: str
    items: int
    size: int
    run_s: float
    cpu_s: float = 0.0
    rss_bytes: int = 0
    tokens: float = 0.0
    time: float = 0.0

    def to_json(self) -> str:
        return json.dumps(self._asdict())


def load_records(path: Path) -> list[Record]:
    """Read JSON lines; raises ValueError naming the line when one is malformed."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(
                Record(
                    str(d["handler"]),
                    str(d.get("agent_id", "")),
                    int(d.get("items", 0)),
                    int(d.get("size", 0)),
                    float(d["run_s"]),
                    float(d.get("cpu_s", 0.0)),
                    int(d.get("rss_bytes", 0)),
                    float(d.get("tokens", 0.0)),
                    float(d.get("time", 0.0)),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a predictor record ({exc})") from exc
    return out


# ------------------------------------------------------------------ synthetic workload

SYNTHETIC_DEFAULTS = {
    # Declared defaults deliberately off (x2 and x0.5) to show the cold start fading.
    "crawl": HandlerDefaults(duration_s=0.6, items_field="urls"),
    "llm": HandlerDefaults(duration_s=1.0, tokens=800.0),
}
SYNTHETIC_SPEEDS = {"agent-fast": 1.0, "agent-slow": 0.5}


def _true_median(handler: str, items: int, size: int) -> float:
    if handler == "crawl":
        return 0.2 + 0.3 * items  # per-request overhead plus per-URL fetch
    return 0.8 + size / 1500.0  # time to first token plus prompt-dependent generation


def synthetic_run(n: int, seed: int) -> list[tuple[Record, float]]:
    """``n`` attempts with their true median (on their agent): crawl of 1-20 URLs (sigma 0.5)
    and llm with 0.5-12 KB prompts (sigma 0.4), each on a random one of two agents."""
    rng = random.Random(seed)
    agents = list(SYNTHETIC_SPEEDS)
    out = []
    for i in range(n):
        agent = agents[rng.randrange(len(agents))]
        if rng.random() < 0.5:
            handler, sigma = "crawl", 0.5
            urls = [
                f"https://example.com/{rng.randrange(10**6)}" for _ in range(rng.randint(1, 20))
            ]
            payload = json.dumps({"urls": urls}).encode()
        else:
            handler, sigma = "llm", 0.4
            payload = json.dumps({"prompt": "x" * rng.randint(500, 12_000)}).encode()
        f = features(payload, SYNTHETIC_DEFAULTS[handler].items_field)
        median = _true_median(handler, f.items, f.size) / SYNTHETIC_SPEEDS[agent]
        run_s = median * math.exp(rng.gauss(0.0, sigma))
        tokens = f.size / 4 + 300 if handler == "llm" else 0.0
        record = Record(handler, agent, f.items, f.size, run_s, 0.02 * run_s, 50 << 20, tokens, i)
        out.append((record, median))
    return out


def _mdape(pairs: Iterable[tuple[float, float]]) -> float:
    errors = [abs(p - a) / a for p, a in pairs if a > 0]
    return statistics.median(errors) if errors else math.nan


def _train(records: Iterable[Record], defaults: Mapping[str, HandlerDefaults]) -> Predictor:
    p = Predictor()
    for h, d in defaults.items():
        p.declare(h, d)
    for r in records:
        f = Features(r.items, r.size)
        p.observe(r.handler, r.agent_id, f, r.run_s, r.cpu_s, r.rss_bytes, r.tokens, r.time)
    return p


def _evaluate(p: Predictor, records: Iterable[Record]) -> dict[str, float]:
    by_handler: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        est = p.predict(r.handler, Features(r.items, r.size), r.agent_id or None)
        by_handler.setdefault(r.handler, []).append((est.duration_s, r.run_s))
    out = {"all": _mdape(x for v in by_handler.values() for x in v)}
    out.update({h: _mdape(v) for h, v in sorted(by_handler.items())})
    return {k: round(v, 4) for k, v in out.items()}


def synthetic_holdout(train_n: int = 4000, test_n: int = 4000, seed: int = 1) -> dict[str, Any]:
    """Train on one synthetic run, evaluate on another; MdAPE per handler and overall."""
    train = synthetic_run(train_n, seed)
    test = synthetic_run(test_n, seed + 1000)
    model = _train((r for r, _ in train), SYNTHETIC_DEFAULTS)
    cold = _train((), SYNTHETIC_DEFAULTS)
    return {
        "train": train_n,
        "test": test_n,
        "mdape": _evaluate(model, (r for r, _ in test)),
        "mdape_cold_start": _evaluate(cold, (r for r, _ in test)),
        "mdape_oracle": round(_mdape((m, r.run_s) for r, m in test), 4),
        "agent_speed": {a: round(model.agent_speed(a), 3) for a in SYNTHETIC_SPEEDS},
        "true_speed": SYNTHETIC_SPEEDS,
        "crawl_item_cost": model.item_cost("crawl")._asdict(),
    }


# ------------------------------------------------------------------ real runs


def holdout_records(
    records: Sequence[Record],
    defaults: Mapping[str, HandlerDefaults] | None = None,
    train_fraction: float = 0.5,
) -> dict[str, Any]:
    """Train on the first ``train_fraction`` of a real run (in time order), evaluate on the
    rest without learning."""
    ordered = sorted(records, key=lambda r: r.time)
    cut = int(len(ordered) * train_fraction)
    model = _train(ordered[:cut], defaults or {})
    return {"train": cut, "test": len(ordered) - cut, "mdape": _evaluate(model, ordered[cut:])}


def prequential_records(
    records: Sequence[Record],
    defaults: Mapping[str, HandlerDefaults] | None = None,
    warmup: int = 20,
) -> dict[str, Any]:
    """Predict each attempt before learning from it; MdAPE over attempts after the first
    ``warmup`` of their handler (the cold start is reported apart)."""
    p = _train((), defaults or {})
    warm: dict[str, list[tuple[float, float]]] = {}
    cold: list[tuple[float, float]] = []
    seen: dict[str, int] = {}
    for r in sorted(records, key=lambda r: r.time):
        f = Features(r.items, r.size)
        pair = (p.predict(r.handler, f, r.agent_id or None).duration_s, r.run_s)
        k = seen[r.handler] = seen.get(r.handler, 0) + 1
        (cold if k <= warmup else warm.setdefault(r.handler, [])).append(pair)
        p.observe(r.handler, r.agent_id, f, r.run_s, r.cpu_s, r.rss_bytes, r.tokens, r.time)
    mdape = {"all": _mdape(x for v in warm.values() for x in v)}
    mdape.update({h: _mdape(v) for h, v in sorted(warm.items())})
    return {
        "records": len(records),
        "warmup": warmup,
        "mdape": {k: round(v, 4) for k, v in mdape.items()},
        "mdape_warmup": round(_mdape(cold), 4),
    }


# ------------------------------------------------------------------ costs


def per_call_costs(number: int = 100_000) -> dict[str, float]:
    """Microseconds per call on a warm model (best of 5 timeit repeats)."""
    data = synthetic_run(2000, 7)
    p = _train((r for r, _ in data), SYNTHETIC_DEFAULTS)
    crawl = json.dumps({"urls": [f"https://example.com/{i}" for i in range(10)]}).encode()
    small = b'{"seconds": 0.05}'
    f_crawl = features(crawl, "urls")
    f_llm = Features(0, 4000)

    def best_us(stmt: Any, n: int) -> float:
        return round(min(timeit.repeat(stmt, number=n, repeat=5)) / n * 1e6, 3)

    records = [r for r, _ in data]
    cursor = iter(range(10**9))

    def observe_at(interval_s: float) -> Any:
        def observe_one() -> None:
            k = next(cursor)
            r = records[k % len(records)]
            f = Features(r.items, r.size)
            p.observe(r.handler, r.agent_id, f, r.run_s, r.cpu_s, 0, 0.0, k * interval_s)

        return observe_one

    balancer, agents = _busy_cluster(32)
    speed = p.agent_speed
    keys = iter(range(10**9))
    ledger_agent = agents[0]

    def ledger_cycle() -> None:
        key = ("j", "t", next(keys))
        balancer.assigned(ledger_agent.id, key, 1.0)
        balancer.started(ledger_agent.id, key, 5.0)
        balancer.ended(ledger_agent.id, key, 5.0)

    return {
        "balancer_choose_2_agents_us": best_us(
            lambda: balancer.choose("search", {}, 1.0, agents[:2], speed, 5.0), number
        ),
        "balancer_choose_32_agents_us": best_us(
            lambda: balancer.choose("search", {}, 1.0, agents, speed, 5.0), number // 10
        ),
        "balancer_ledger_cycle_us": best_us(ledger_cycle, number // 4),
        "predict_us": best_us(lambda: p.predict("llm", f_llm), number),
        "predict_agent_us": best_us(lambda: p.predict("llm", f_llm, "agent-slow"), number),
        "predict_items_us": best_us(lambda: p.predict("crawl", f_crawl, "agent-fast"), number),
        "features_us": best_us(lambda: features(small, ""), number),
        "features_items_us": best_us(lambda: features(crawl, "urls"), number // 10),
        # One result per second per handler: every observation learns (full cost).
        "observe_learn_us": best_us(observe_at(1.0), number // 4),
        # 10,000 results/s: the learning budget (500/s per handler) drops most of them.
        "observe_10k_per_s_us": best_us(observe_at(1e-4), number),
    }


def _busy_cluster(n: int) -> tuple[Balancer, list[AgentView]]:
    """``n`` agents of 8 slots, each holding 8 running and 2 prefetched attempts."""
    balancer = Balancer()
    job = Job(id="j", name="j", submitted_at=0.0)
    agents = []
    for i in range(n):
        agent = AgentView(id=f"agent-{i}", handlers=frozenset({"search"}), slots=8, prefetch=4)
        for k in range(10):
            task = Task(
                job=job,
                spec=TaskSpec(id=f"{i}-{k}", handler="search"),
                timeout_s=60.0,
                max_retries=0,
            )
            task.attempt = 1
            agent.hold(task.key, task)
            balancer.assigned(agent.id, task.key, 1.0 + k + i)
            if k < 8:
                balancer.started(agent.id, task.key, 0.0)
        agents.append(agent)
    return balancer, agents


def run(
    records_path: Path | None = None, train_n: int = 4000, test_n: int = 4000, seed: int = 1
) -> dict[str, Any]:
    """The benchmark's JSON: synthetic hold-out, costs, and a real run's records if given."""
    out: dict[str, Any] = {"workload": "predictor"}
    out["synthetic"] = synthetic_holdout(train_n, test_n, seed)
    out["costs"] = per_call_costs()
    if records_path is not None:
        records = load_records(records_path)
        out["records_holdout"] = holdout_records(records)
        out["records_prequential"] = prequential_records(records)
    return out
