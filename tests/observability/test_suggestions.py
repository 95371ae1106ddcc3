"""Each optimisation suggestion fires on the number behind it, and only then."""

from __future__ import annotations

from typing import Any, cast

from deerflow_controller.observability.stats import Sample, StatsHistory
from deerflow_controller.observability.suggestions import suggest


def stats(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "agents": [
            {"id": "a1", "slots": 16, "cpu_percent": 20.0, "memory_percent": 30.0,
             "heartbeat_age_s": 0.5},
        ],
        "tasks": {"live": {"queued": 0, "throttled": 0}},
        "window": {"seconds": 60.0, "completed": 600, "retries": 0, "failed": 0,
                   "utilisation": 0.5, "max_queued": 0, "rate_limited": {}, "agent_load": {}},
        "latency": {"all": {"wait": {"p95": 0.01}}},
        "rate_keys": [],
        "errors": {"retries_by_kind": {}},
    }  # fmt: skip
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return base


def ids(s: dict[str, Any]) -> list[str]:
    return [x.id for x in suggest(s)]


def test_a_healthy_cluster_gets_no_advice() -> None:
    assert ids(stats()) == []


def test_low_utilisation_names_the_share_of_slots_used() -> None:
    (s,) = suggest(stats(window={"utilisation": 0.08}))
    assert (s.id, s.value, s.threshold) == ("low_utilisation", 0.08, 0.25)
    assert "8% of their 16 slots" in s.detail
    assert ids(stats(window={"utilisation": 0.08, "max_queued": 5})) == []  # work was waiting
    assert ids(stats(window={"utilisation": 0.08, "seconds": 5.0})) == []  # too little history


def test_high_queue_wait_says_whether_agents_are_busy() -> None:
    slow = {"all": {"wait": {"p95": 3.2}}}
    (busy,) = suggest(stats(latency=slow, window={"utilisation_queued": 0.95}))
    assert busy.id == "high_queue_wait" and busy.value == 3.2
    assert "add agents or slots" in busy.detail
    (idle,) = suggest(stats(latency=slow, window={"utilisation_queued": 0.3}))
    assert "handlers or labels" in idle.detail
    (throttled,) = suggest(stats(latency=slow, window={"utilisation_queued": None}))
    assert "no task waited QUEUED" in throttled.detail


def test_queue_wait_advice_reads_slot_use_while_tasks_queued_not_a_minute_with_an_idle_start() -> (
    None
):
    # 30 s idle, then 30 s with every slot busy and tasks queued: the agents table reads 100 %,
    # and so must the advice (the minute's plain average is 50 %).
    history = StatsHistory(cast(Any, None))
    for t in range(60):
        busy = t >= 30
        history.samples.append(
            Sample(
                time=float(t), completed=0, submitted=0, failed=0, retries=0,
                queued=200 if busy else 0, throttled=0, in_flight=32 if busy else 0,
                busy=32 if busy else 0, slots=32,
            )
        )  # fmt: skip
    window = history.window()
    assert window["utilisation"] == 0.5
    agents = [{"id": a, "slots": 16, "utilisation": 1.0, "heartbeat_age_s": 0.5} for a in "ab"]
    (s,) = suggest(stats(window=window, agents=agents, latency={"all": {"wait": {"p95": 3.2}}}))
    assert s.id == "high_queue_wait"
    assert "agents used 100% of their slots" in s.detail and "add agents or slots" in s.detail
    assert "50%" not in s.detail


def test_rate_limited_and_backlogged_keys_are_named() -> None:
    key = {"key": "llm/k", "paced_rps": 2.0, "waiting": 400}
    out = {x.id: x for x in suggest(stats(window={"rate_limited": {"llm/k": 7}}, rate_keys=[key]))}
    assert out["rate_limited:llm/k"].value == 7
    assert "2.00 requests/s" in out["rate_limited:llm/k"].detail
    assert out["throttled_backlog:llm/k"].value == 200.0  # 400 tasks at 2/s


def test_retries_and_failures_are_rates_over_the_window() -> None:
    s = {
        x.id: x
        for x in suggest(
            stats(
                window={"retries": 50, "completed": 100, "failed": 10},
                errors={"retries_by_kind": {"TIMEOUT": 40, "HANDLER_ERROR": 10}},
            )
        )
    }
    assert s["high_retry_rate"].value == round(50 / 150, 3)
    assert "most often TIMEOUT" in s["high_retry_rate"].detail
    assert s["high_failure_rate"].value == 0.1
    assert suggest(stats(window={"retries": 50, "completed": 100, "failed": 10}))[0].severity == (
        "critical"
    )


def test_a_hot_machine_must_stay_hot_for_the_window() -> None:
    hot = {"a1": {"cpu_percent": 97.0, "memory_percent": 30.0}}
    (s,) = suggest(stats(window={"agent_load": hot}))
    assert s.id == "hot_agent:a1:cpu" and s.value == 97.0
    assert ids(stats(window={"agent_load": hot, "seconds": 3.0})) == []


def test_a_hot_machine_whose_agent_is_idle_blames_the_other_work_not_the_slots() -> None:
    load = {"cpu_percent": 97.0, "memory_percent": 30.0}
    (busy,) = suggest(stats(window={"agent_load": {"a1": {**load, "process_cpu_percent": 90.0}}}))
    assert "lower its --slots" in busy.detail
    (idle,) = suggest(stats(window={"agent_load": {"a1": {**load, "process_cpu_percent": 1.0}}}))
    assert idle.id == "hot_agent:a1:cpu" and idle.value == 97.0
    assert "own processes used only 1%" in idle.detail and "--slots" not in idle.detail


def test_no_agents_with_ready_work_is_critical() -> None:
    (s,) = suggest(stats(agents=[], tasks={"live": {"queued": 4, "throttled": 1}}))
    assert (s.id, s.severity, s.value) == ("no_agents", "critical", 5.0)


def test_a_cache_that_rarely_hits_gets_advice_with_its_hit_rate() -> None:
    cache = {"enabled": True, "lookups": 1000, "hit_rate": 0.01}
    (s,) = suggest(stats(cache=cache))
    assert s.id == "low_cache_hit_rate" and s.value == 0.01
    assert "1.0% of 1000" in s.detail
    assert ids(stats(cache={**cache, "lookups": 50})) == []  # too few lookups to judge
    assert ids(stats(cache={**cache, "hit_rate": 0.3})) == []


def test_an_open_circuit_is_critical_and_says_why() -> None:
    circuits = [
        {"key": "search/k", "state": "open", "trips": 2, "reason": "8 of 9 attempts failed"},
        {"key": "handler:llm", "state": "closed", "trips": 1, "reason": "earlier"},
    ]
    (s,) = suggest(stats(circuits=circuits))
    assert s.id == "circuit_open:search/k" and s.severity == "critical"
    assert "8 of 9 attempts failed" in s.detail


def test_a_quarantined_agent_is_named_with_the_reason() -> None:
    q = [{"agent": "a2", "handler": "crawl", "reason": "6 of 7 failed", "for_s": 42.0}]
    (s,) = suggest(stats(quarantined=q))
    assert s.id == "quarantined:a2:crawl" and "6 of 7 failed" in s.detail


def test_the_tuners_latest_suggestion_per_knob_is_listed_while_recent() -> None:
    def change(at: float, new: int) -> dict[str, Any]:
        return {
            "at": at, "knob": "agent_slots", "old": 4, "new": new, "outcome": "suggested",
            "reason": "300 tasks waited while the agents' slots were full",
            "before_detail": "80.0 tasks/s", "objective": "throughput",
        }  # fmt: skip

    tuner = {"history": [change(900.0, 6), change(950.0, 8)]}
    (s,) = suggest(stats(tuner=tuner, controller={"time": 1000.0}))
    assert s.id == "tuner:agent_slots" and "from 4 to 8" in s.title
    assert "--tuner on" in s.detail and s.value == 8.0
    assert ids(stats(tuner=tuner, controller={"time": 2000.0})) == []
