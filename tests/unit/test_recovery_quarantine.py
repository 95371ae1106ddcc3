"""Agent quarantine: an agent failing a handler far more than its peers is taken off it; a
provider failing everywhere quarantines nobody."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from deerflow_common.errors import ErrorClass
from deerflow_controller.recovery import AgentQuarantine, QuarantineAction, QuarantineConfig

T = ErrorClass.TRANSIENT
CFG = QuarantineConfig(cooldown_s=60.0, cooldown_factor=2.0, cooldown_max_s=200.0)


def _healthy(q: AgentQuarantine, agent: str, n: int, now: float, handler: str = "crawl") -> None:
    for _ in range(n):
        assert q.record(agent, handler, True, T, now) is None


def test_an_agent_failing_far_more_than_its_peers_is_quarantined_with_the_numbers() -> None:
    q = AgentQuarantine(CFG)
    _healthy(q, "good", 10, 0.0)
    q.record("good", "crawl", False, T, 0.0)  # peers at 1 of 11
    _healthy(q, "bad", 2, 1.0)
    decisions = [q.record("bad", "crawl", False, T, 2.0) for _ in range(5)]

    assert decisions[:4] == [None] * 4
    d = decisions[4]
    assert d is not None
    assert d.action is QuarantineAction.QUARANTINED
    assert (d.agent, d.handler, d.until) == ("bad", "crawl", 62.0)
    assert (d.failures, d.attempts, d.peer_failures, d.peer_attempts) == (5, 7, 1, 11)
    assert d.healthy_peers == 1
    assert d.reason == (
        "agent 'bad' quarantined for handler 'crawl' for 60 s (strike 1): 5 of its 7 attempts "
        "failed (71 %) within 120 s against 1 of 11 (9 %) on its peers"
    )
    assert q.is_quarantined("bad", "crawl", 2.0)
    assert not q.is_quarantined("bad", "search", 2.0)
    assert not q.is_quarantined("good", "crawl", 2.0)
    assert q.quarantined_handlers("bad", 2.0) == {"crawl"}
    assert q.quarantined_handlers("good", 2.0) == frozenset()
    assert q.quarantined_handlers("bad", 62.0) == frozenset()


def test_a_provider_failing_on_every_agent_quarantines_nobody() -> None:
    q = AgentQuarantine(CFG)
    for i in range(30):
        for agent in ("a1", "a2", "a3"):
            ok = i % 3 != 0 if agent != "a3" else i % 2 != 0  # 33 % to 50 % everywhere
            assert q.record(agent, "llm", ok, T, float(i)) is None

    assert not any(q.is_quarantined(a, "llm", 30.0) for a in ("a1", "a2", "a3"))


def test_rate_limited_and_soft_errors_never_quarantine() -> None:
    q = AgentQuarantine(CFG)
    _healthy(q, "good", 10, 0.0, "llm")
    for cls in (ErrorClass.RATE_LIMITED, ErrorClass.SOFT):
        for _ in range(20):
            assert q.record("unlucky", "llm", False, cls, 1.0) is None

    assert not q.is_quarantined("unlucky", "llm", 1.0)


def test_fatal_errors_on_one_agent_only_do_quarantine_it() -> None:
    q = AgentQuarantine(CFG)
    _healthy(q, "good", 10, 0.0, "llm")
    decisions = [q.record("no-key", "llm", False, ErrorClass.FATAL, 1.0) for _ in range(5)]

    assert decisions[4] is not None and decisions[4].action is QuarantineAction.QUARANTINED


def test_no_quarantine_without_a_healthy_peer() -> None:
    q = AgentQuarantine(CFG)
    # Peers never fail, but none has run enough attempts to vouch for the handler.
    for i in range(5):
        _healthy(q, f"young{i}", 2, 0.0)
    decisions = [q.record("bad", "crawl", False, T, 1.0) for _ in range(8)]

    assert decisions == [None] * 8
    _healthy(q, "young0", 1, 2.0)  # now one peer has 3 clean attempts
    d = q.record("bad", "crawl", False, T, 2.0)
    assert d is not None and d.healthy_peers == 1


def test_the_quarantine_ends_in_probation_and_a_success_releases() -> None:
    q = AgentQuarantine(CFG)
    _healthy(q, "good", 10, 0.0)
    for _ in range(5):
        q.record("bad", "crawl", False, T, 0.0)
    assert q.next_change(0.0) == 60.0
    # Attempts started before the quarantine and reported during it are ignored.
    assert q.record("bad", "crawl", False, T, 10.0) is None

    expired = q.advance(60.0)

    assert [d.action for d in expired] == [QuarantineAction.PROBATION]
    assert not q.is_quarantined("bad", "crawl", 60.0)
    released = q.record("bad", "crawl", True, T, 61.0)
    assert released is not None and released.action is QuarantineAction.RELEASED
    assert released.reason == "agent 'bad' released for handler 'crawl': it succeeded on probation"
    assert q.next_change(61.0) is None


def test_a_failure_on_probation_quarantines_again_for_longer_up_to_the_cap() -> None:
    q = AgentQuarantine(CFG)
    _healthy(q, "good", 10, 0.0)
    for _ in range(5):
        q.record("bad", "crawl", False, T, 0.0)
    lengths = []
    now = 0.0
    for _ in range(3):
        now = q.next_change(now) or 0.0
        q.advance(now)
        d = q.record("bad", "crawl", False, T, now)
        assert d is not None and d.action is QuarantineAction.QUARANTINED
        assert "failed again on probation" in d.reason
        lengths.append(d.until - now)

    assert lengths == [120.0, 200.0, 200.0]


def test_expiry_applied_lazily_is_still_reported_by_advance() -> None:
    q = AgentQuarantine(CFG)
    _healthy(q, "good", 10, 0.0)
    for _ in range(5):
        q.record("bad", "crawl", False, T, 0.0)

    assert not q.is_quarantined("bad", "crawl", 70.0)
    assert [d.action for d in q.advance(70.0)] == [QuarantineAction.PROBATION]
    assert q.advance(70.0) == []


def test_a_released_agent_is_judged_afresh_not_on_its_old_failures() -> None:
    q = AgentQuarantine(CFG)
    _healthy(q, "good", 10, 0.0)
    for _ in range(5):
        q.record("bad", "crawl", False, T, 0.0)
    q.advance(60.0)
    q.record("bad", "crawl", True, T, 60.0)

    # Four new failures stay below min_failures: the five before the quarantine are gone.
    assert [q.record("bad", "crawl", False, T, 61.0) for _ in range(4)] == [None] * 4
    again = q.record("bad", "crawl", False, T, 61.0)
    assert again is not None and again.until - 61.0 == 120.0  # strike 2: released < stable_s ago


def _windows(q: AgentQuarantine) -> object:
    return {
        h: (list(w.outcomes), w.attempts, w.failures, {a: list(c) for a, c in w.per_agent.items()})
        for h, w in q._windows.items()
    }


@settings(max_examples=300, deadline=None)
@given(
    messages=st.lists(
        st.tuples(
            st.floats(0.0, 90.0),  # time since the previous message
            st.sampled_from(["good", "bad"]),  # the agent whose results these are
            st.lists(st.tuples(st.sampled_from(["crawl", "llm"]), st.booleans()), max_size=12),
        ),
        max_size=30,
    )
)
def test_successes_recorded_together_are_recorded_as_one_by_one(
    messages: list[tuple[float, str, list[tuple[str, bool]]]],
) -> None:
    """As the core feeds one agent's result message: its successes per handler together
    before each failure and at the end (each in turn when the pair was ever sentenced); the
    windows, sentences and decisions are those of recording each outcome in turn."""
    cfg = QuarantineConfig(
        window_s=120.0,
        min_failures=2,
        min_peer_attempts=2,
        healthy_peer_attempts=1,
        cooldown_s=60.0,
    )
    one, batched = AgentQuarantine(cfg), AgentQuarantine(cfg)
    seen_one: list[object] = []
    seen_batched: list[object] = []
    now = 0.0

    def flush(agent: str, pending: list[str]) -> None:
        for handler in dict.fromkeys(pending):
            n = pending.count(handler)
            if not batched.record_successes(agent, handler, n, now):
                for _ in range(n):
                    seen_batched.append(
                        batched.record(agent, handler, True, ErrorClass.UNSPECIFIED, now)
                    )
        pending.clear()

    for dt, agent, outcomes in messages:
        now += dt
        pending: list[str] = []
        for handler, failed in outcomes:
            if failed:
                flush(agent, pending)
                seen_one.append(one.record(agent, handler, False, T, now))
                seen_batched.append(batched.record(agent, handler, False, T, now))
            else:
                pending.append(handler)
                seen_one.append(one.record(agent, handler, True, ErrorClass.UNSPECIFIED, now))
        flush(agent, pending)
        assert _windows(batched) == _windows(one)
        assert batched._sentences == one._sentences
    assert [s for s in seen_batched if s is not None] == [s for s in seen_one if s is not None]
