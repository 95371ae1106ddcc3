"""Optimisation suggestions: rules over one stats snapshot, each naming the number behind it.

Pure functions of plain data (the dict :func:`stats.snapshot` builds, as served at
``/api/stats``), so they are easy to test and the dashboard, ``deerflow top`` and anyone reading
the JSON see the same advice. Each rule fires on a window of recent history (the last minute),
never on one instant, so a single burst does not raise an alarm.

"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RULES", "Suggestion", "suggest"]

LOW_UTILISATION = 0.25
"""Average share of slots in use below which the cluster is oversized for its work."""
HIGH_UTILISATION = 0.85
HIGH_WAIT_S = 1.0
"""p95 schedule-to-start above which tasks wait too long for a slot."""
HIGH_RETRY_RATE = 0.10
HIGH_FAILURE_RATE = 0.05
THROTTLE_DRAIN_S = 60.0
"""A rate key's backlog that takes longer than this to drain at its paced rate."""
HOT_MACHINE_PERCENT = 90.0
STALE_HEARTBEAT_S = 5.0
LOW_CACHE_HIT_RATE = 0.05
"""Below this share of hits over at least ``MIN_CACHE_LOOKUPS`` lookups, the cache is not
earning its memory: requests vary in a field that does not change the answer, or the
similarity layer is off."""
MIN_CACHE_LOOKUPS = 200
MIN_WINDOW_S = 20.0
"""Rules on rates need at least this much history."""


@dataclass(frozen=True, slots=True)
class Suggestion:
    id: str
    """Stable name of the rule (and the subject, e.g. the key or agent)."""
    severity: str
    """info, warning or critical."""
    title: str
    detail: str
    """What to do, with the numbers."""
    value: float
    """The number behind it."""
    threshold: float
    """Where the rule fires."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Stats = Mapping[str, Any]
Rule = Callable[[Stats], list[Suggestion]]


def _window(stats: Stats) -> Mapping[str, Any]:
    w: Mapping[str, Any] = stats.get("window") or {}
    return w


def low_utilisation(stats: Stats) -> list[Suggestion]:
    w = _window(stats)
    if w.get("seconds", 0) < MIN_WINDOW_S or not w.get("completed") or not stats.get("agents"):
        return []
    used = float(w.get("utilisation", 0.0))
    if used >= LOW_UTILISATION or w.get("max_queued", 0) > 0:
        return []
    slots = sum(a["slots"] for a in stats["agents"])
    return [
        Suggestion(
            "low_utilisation",
            "info",
            "Low worker utilisation",
            f"Agents used {used:.0%} of their {slots} slots on average over the last "
            f"{w['seconds']:.0f} s with nothing queued: the cluster is larger than its work; "
            "run fewer agents or lower --slots.",
            round(used, 3),
            LOW_UTILISATION,
        )
    ]


def high_queue_wait(stats: Stats) -> list[Suggestion]:
    p95 = stats.get("latency", {}).get("all", {}).get("wait", {}).get("p95")
    if p95 is None or p95 <= HIGH_WAIT_S:
        return []
    w = _window(stats)
    # How full the agents were while tasks sat QUEUED, not the window's plain average: a job
    # that filled every slot after 30 idle seconds averages 50 % over the minute, yet its tasks
    # waited on full agents (what the agents table shows).
    used = w.get("utilisation_queued")
    if used is None:
        advice = (
            f"though no task waited QUEUED for a slot in the last {w.get('seconds', 0):.0f} s: "
            "rate keys held them (THROTTLED) or the wait is older; check the rate keys"
        )
    elif used >= HIGH_UTILISATION:
        advice = (
            f"while agents used {used:.0%} of their slots with tasks queued: add agents or "
            "slots, or lower the priority of bulk work"
        )
    else:
        advice = (
            f"although agents used only {used:.0%} of their slots while tasks were queued: "
            "the waiting tasks' handlers or labels match few agents, or rate keys hold them; "
            "check the queue by handler"
        )
    return [
        Suggestion(
            "high_queue_wait",
            "warning",
            "Tasks wait long for a slot",
            f"Tasks waited {p95:.2f} s at p95 from ready to dispatch {advice}.",
            round(p95, 4),
            HIGH_WAIT_S,
        )
    ]


def rate_limited_keys(stats: Stats) -> list[Suggestion]:
    w = _window(stats)
    out = []
    by_key = {k["key"]: k for k in stats.get("rate_keys", [])}
    for key, n in sorted((w.get("rate_limited") or {}).items()):
        if n <= 0:
            continue
        paced = by_key.get(key, {}).get("paced_rps", 0.0)
        pace = f"paced at {paced:.2f} requests/s" if paced else "not paced"
        out.append(
            Suggestion(
                f"rate_limited:{key}",
                "warning",
                f"Provider rate-limits key {key}",
                f"Key {key} got {n} answers 429 in the last {w.get('seconds', 0):.0f} s while "
                f"{pace}: the provider's real limit is lower; state it (rpm/tpm/concurrency) "
                "in the --limits file so tasks wait in the controller instead of failing.",
                float(n),
                0.0,
            )
        )
    return out


def throttled_backlog(stats: Stats) -> list[Suggestion]:
    out = []
    for k in stats.get("rate_keys", []):
        waiting, paced = k.get("waiting", 0), k.get("paced_rps", 0.0)
        if waiting <= 0 or paced <= 0:
            continue
        drain_s = waiting / paced
        if drain_s <= THROTTLE_DRAIN_S:
            continue
        out.append(
            Suggestion(
                f"throttled_backlog:{k['key']}",
                "info",
                f"Backlog on key {k['key']}",
                f"{waiting} tasks wait on key {k['key']}, paced at {paced:.2f} requests/s: "
                f"about {drain_s:.0f} s to drain. Raise the key's limit if the provider allows "
                "it, or spread the work over more keys.",
                round(drain_s, 1),
                THROTTLE_DRAIN_S,
            )
        )
    return out


def high_retry_rate(stats: Stats) -> list[Suggestion]:
    w = _window(stats)
    retries, done = int(w.get("retries", 0)), int(w.get("completed", 0))
    if retries < 5:
        return []
    rate = retries / (retries + done)
    if rate <= HIGH_RETRY_RATE:
        return []
    kinds = stats.get("errors", {}).get("retries_by_kind", {})
    top = max(kinds.items(), key=lambda kv: kv[1])[0] if kinds else "unknown"
    return [
        Suggestion(
            "high_retry_rate",
            "warning",
            "Many attempts are retried",
            f"{rate:.0%} of attempts in the last {w.get('seconds', 0):.0f} s were retried "
            f"({retries} retries, {done} tasks finished); most often {top}. Look at the recent "
            "errors: a provider limit belongs in --limits, a broken input should raise "
            "FatalError.",
            round(rate, 3),
            HIGH_RETRY_RATE,
        )
    ]


def high_failure_rate(stats: Stats) -> list[Suggestion]:
    w = _window(stats)
    failed, done = int(w.get("failed", 0)), int(w.get("completed", 0))
    if failed < 3 or not done:
        return []
    rate = failed / done
    if rate <= HIGH_FAILURE_RATE:
        return []
    return [
        Suggestion(
            "high_failure_rate",
            "critical",
            "Tasks are failing",
            f"{rate:.0%} of the tasks that finished in the last {w.get('seconds', 0):.0f} s "
            f"failed ({failed} of {done}); see the recent errors.",
            round(rate, 3),
            HIGH_FAILURE_RATE,
        )
    ]


def agent_health(stats: Stats) -> list[Suggestion]:
    out = []
    w = _window(stats)
    sustained = w.get("seconds", 0) >= MIN_WINDOW_S
    load = w.get("agent_load") or {}
    for a in stats.get("agents", []):
        avg = load.get(a["id"]) if sustained else None
        for what, key in (("CPU", "cpu_percent"), ("memory", "memory_percent")):
            value = avg[key] if avg else 0.0  # averaged over the window, never one heartbeat
            if value > HOT_MACHINE_PERCENT:
                advice = "its tasks slow each other down; lower its --slots or add a machine."
                own = avg.get("process_cpu_percent") if avg and what == "CPU" else None
                if own is not None and own < value / 2:
                    # The machine's CPU, not the agent's: --slots would not help.
                    advice = (
                        f"the agent's own processes used only {own:.0f}%: other work on that "
                        "machine takes it; move that work or the agent."
                    )
                out.append(
                    Suggestion(
                        f"hot_agent:{a['id']}:{what.lower()}",
                        "warning",
                        f"Agent {a['id']} is short of {what}",
                        f"Agent {a['id']}'s machine averaged {value:.0f}% {what} over the last "
                        f"{w['seconds']:.0f} s: {advice}",
                        round(value, 1),
                        HOT_MACHINE_PERCENT,
                    )
                )
        age = a.get("heartbeat_age_s", 0.0)
        if age > STALE_HEARTBEAT_S:
            out.append(
                Suggestion(
                    f"silent_agent:{a['id']}",
                    "warning",
                    f"Agent {a['id']} is silent",
                    f"Agent {a['id']} has not reported for {age:.0f} s (heartbeats come every "
                    "second); it is declared dead after 15 s and its tasks run elsewhere.",
                    round(age, 1),
                    STALE_HEARTBEAT_S,
                )
            )
    return out


def no_agents(stats: Stats) -> list[Suggestion]:
    live = stats.get("tasks", {}).get("live", {})
    waiting = int(live.get("queued", 0)) + int(live.get("throttled", 0))
    if stats.get("agents") or not waiting:
        return []
    return [
        Suggestion(
            "no_agents",
            "critical",
            "No agent is connected",
            f"{waiting} tasks are ready but no agent is connected: start deerflow-agent "
            "pointing at this controller.",
            float(waiting),
            0.0,
        )
    ]


def low_cache_hit_rate(stats: Stats) -> list[Suggestion]:
    c = stats.get("cache") or {}
    lookups = int(c.get("lookups", 0))
    if not c.get("enabled") or lookups < MIN_CACHE_LOOKUPS:
        return []
    rate = float(c.get("hit_rate", 0.0))
    if rate >= LOW_CACHE_HIT_RATE:
        return []
    return [
        Suggestion(
            "low_cache_hit_rate",
            "info",
            "The result cache rarely hits",
            f"{rate:.1%} of {lookups} cacheable lookups hit. If the same questions come back "
            "with a varying field (a timestamp, a request id), leave it out of the payload; "
            "for search-like handlers declare similarity_field and a threshold.",
            round(rate, 4),
            LOW_CACHE_HIT_RATE,
        )
    ]


def open_circuits(stats: Stats) -> list[Suggestion]:
    out = []
    for c in stats.get("circuits") or []:
        if c.get("state") == "closed":
            continue
        out.append(
            Suggestion(
                f"circuit_open:{c['key']}",
                "critical",
                f"Circuit {c['key']} is {c['state'].replace('_', '-')}",
                f"{c.get('reason', '')}. Its tasks wait THROTTLED instead of failing; check the "
                "provider's status, and the recent errors.",
                float(c.get("trips", 0)),
                1.0,
            )
        )
    return out


def quarantined_agents(stats: Stats) -> list[Suggestion]:
    return [
        Suggestion(
            f"quarantined:{q['agent']}:{q['handler']}",
            "warning",
            f"Agent {q['agent']} is held out of {q['handler']}",
            f"{q['reason']}. Check that agent's installation and credentials.",
            float(q.get("for_s", 0.0)),
            0.0,
        )
        for q in stats.get("quarantined") or []
    ]


TUNER_SUGGESTION_S = 60.0
"""How long the tuner's suggestion (``--tuner observe``) stays on the list."""


def tuner_suggestions(stats: Stats) -> list[Suggestion]:
    """The tuner's latest suggestion per knob (observe mode), while recent."""
    tuner = stats.get("tuner") or {}
    now = float(stats.get("controller", {}).get("time", 0.0))
    latest: dict[str, Mapping[str, Any]] = {}
    for c in tuner.get("history") or []:
        if c.get("outcome") == "suggested" and now - float(c["at"]) <= TUNER_SUGGESTION_S:
            latest[c["knob"]] = c
    return [
        Suggestion(
            f"tuner:{knob}",
            "info",
            f"The tuner would change {knob} from {c['old']} to {c['new']}",
            f"{str(c['reason']).capitalize()} ({c['before_detail']}). Run the controller with "
            f"--tuner on to let it try this, keeping it only if {c['objective']} improves.",
            float(c["new"]),
            float(c["old"]),
        )
        for knob, c in sorted(latest.items())
    ]


RULES: tuple[Rule, ...] = (
    no_agents,
    high_failure_rate,
    high_retry_rate,
    rate_limited_keys,
    high_queue_wait,
    throttled_backlog,
    agent_health,
    low_utilisation,
    low_cache_hit_rate,
    open_circuits,
    quarantined_agents,
    tuner_suggestions,
)


def suggest(stats: Stats) -> list[Suggestion]:
    """Every rule's suggestions, most severe first."""
    out = [s for rule in RULES for s in rule(stats)]
    order = {"critical": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda s: order.get(s.severity, 3))
