"""Taking an agent off a handler it fails far more often than its peers do.

Per handler, a sliding window of ``window_s`` holds every counted outcome with the agent that
produced it. An agent is quarantined for the handler when, within the window, it has at least
``min_failures`` failures, its failure rate is at least ``min_rate`` and at least
``peer_factor`` times the pooled rate of its peers (which need ``min_peer_attempts`` attempts
between them), and at least one peer is healthy (``healthy_peer_attempts`` attempts, failure
rate at most ``healthy_peer_rate``, not quarantined itself). Failing like everyone else is the
provider's fault and quarantines nobody; so are 429s and content refusals, which never count.

A quarantine lasts ``cooldown_s`` (multiplied by ``cooldown_factor`` for each strike with no
``stable_s`` spell between, capped at ``cooldown_max_s``); then the agent gets the handler back
on probation: its next outcome decides, a success releasing it and a failure quarantining it
again for longer.

Pure: every method takes ``now``; each outcome enters and leaves its handler's window once.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from deerflow_common.errors import ErrorClass
from deerflow_controller.recovery.config import QuarantineConfig

__all__ = ["AgentQuarantine", "QuarantineAction", "QuarantineDecision"]


class QuarantineAction(Enum):
    QUARANTINED = "quarantined"
    """Take the handler off the agent and drain its not-yet-started attempts of it."""
    PROBATION = "probation"
    """The cool-down is over: the agent may run the handler again; its next outcome decides."""
    RELEASED = "released"
    """A success on probation: the agent is trusted with the handler again."""


@dataclass(frozen=True, slots=True)
class QuarantineDecision:
    agent: str
    handler: str
    action: QuarantineAction
    at: float
    until: float
    """End of the quarantine (0 unless QUARANTINED)."""
    failures: int
    attempts: int
    peer_failures: int
    peer_attempts: int
    healthy_peers: int
    reason: str


@dataclass(slots=True)
class _Sentence:
    until: float
    strikes: int
    probation: bool = False
    released_at: float = 0.0


@dataclass(slots=True)
class _HandlerWindow:
    outcomes: deque[tuple[float, str, bool]] = field(default_factory=deque)
    attempts: int = 0
    failures: int = 0
    per_agent: dict[str, list[int]] = field(default_factory=dict)
    """agent -> [attempts, failures] within the window."""


class AgentQuarantine:
    """Quarantine decisions for every (agent, handler) pair."""

    def __init__(self, config: QuarantineConfig | None = None) -> None:
        self.config = config or QuarantineConfig()
        self._windows: dict[str, _HandlerWindow] = {}
        self._sentences: dict[tuple[str, str], _Sentence] = {}
        self._timers: list[tuple[float, str, str]] = []
        self._pending: list[QuarantineDecision] = []
        self._by_agent: dict[str, set[str]] = {}
        """Handlers each agent is quarantined for (until their expiry is next looked at)."""

    def record(
        self, agent: str, handler: str, ok: bool, cls: ErrorClass, now: float
    ) -> QuarantineDecision | None:
        """An attempt of ``handler`` on ``agent`` ended (``cls`` is ignored when ``ok``).
        Returns a decision when this outcome quarantines or releases the agent, else None."""
        cfg = self.config
        if not ok and cls not in cfg.counted:
            return None
        pair = (agent, handler)
        sentence = self._sentences.get(pair)
        if sentence is not None:
            self._refresh(pair, sentence, now)
            if not sentence.probation and sentence.until > now:
                return None  # an attempt from before the quarantine: already judged
            if sentence.probation:
                if ok:
                    sentence.probation, sentence.released_at = False, now
                    self._add(handler, agent, ok, now)
                    return self._decision(
                        agent,
                        handler,
                        QuarantineAction.RELEASED,
                        now,
                        0.0,
                        f"agent {agent!r} released for handler {handler!r}: it succeeded on "
                        "probation",
                    )
                return self._quarantine(agent, handler, now, "it failed again on probation")
        self._add(handler, agent, ok, now)
        if ok:
            return None
        return self._judge(agent, handler, now)

    def record_successes(self, agent: str, handler: str, n: int, now: float) -> bool:
        """``n`` attempts of ``handler`` on ``agent`` succeeded at ``now``: the same as ``n``
        calls of :meth:`record` when the pair has never been sentenced (no decision can
        follow), at the cost of one window update. Returns False, recording nothing, when it
        has been: the caller records each then."""
        if (agent, handler) in self._sentences:
            return False
        self._add(handler, agent, True, now, n)
        return True

    def is_quarantined(self, agent: str, handler: str, now: float) -> bool:
        sentence = self._sentences.get((agent, handler))
        if sentence is None:
            return False
        self._refresh((agent, handler), sentence, now)
        return not sentence.probation and sentence.until > now

    def quarantined_handlers(self, agent: str, now: float) -> frozenset[str]:
        """The handlers ``agent`` must not be given now: the scheduler removes them from the
        agent's open handlers when it dispatches. O(handlers quarantined for the agent)."""
        handlers = self._by_agent.get(agent)
        if not handlers:
            return frozenset()
        return frozenset(h for h in tuple(handlers) if self.is_quarantined(agent, h, now))

    def next_change(self, now: float) -> float | None:
        """When a quarantine next ends by time alone; the scheduler arms a timer and calls
        :meth:`advance` then (a dispatch follows: the agent may take the handler again)."""
        timers = self._timers
        while timers:
            when, agent, handler = timers[0]
            s = self._sentences.get((agent, handler))
            if s is not None and not s.probation and not s.released_at and s.until == when:
                return when
            heapq.heappop(timers)
        return None

    def advance(self, now: float) -> list[QuarantineDecision]:
        """Apply every expiry due by ``now``; returns the decisions (PROBATION) made since the
        last call, including those applied on the way by other methods, oldest first."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, agent, handler = heapq.heappop(timers)
            s = self._sentences.get((agent, handler))
            if s is not None:
                self._refresh((agent, handler), s, now)
        out, self._pending = self._pending, []
        return out

    # ----------------------------------------------------------------- internals

    def _refresh(self, pair: tuple[str, str], s: _Sentence, now: float) -> None:
        if s.probation or s.until > now or s.released_at:
            return
        s.probation = True
        agent, handler = pair
        self._by_agent[agent].discard(handler)
        self._pending.append(
            self._decision(
                agent,
                handler,
                QuarantineAction.PROBATION,
                now,
                0.0,
                f"agent {agent!r} may run handler {handler!r} again on probation: its "
                "quarantine is over and its next outcome decides",
            )
        )

    def _add(self, handler: str, agent: str, ok: bool, now: float, n: int = 1) -> None:
        """``n`` outcomes of ``handler`` on ``agent`` at ``now`` enter the window."""
        w = self._windows.get(handler)
        if w is None:
            w = self._windows[handler] = _HandlerWindow()
        failed = not ok
        if n == 1:
            w.outcomes.append((now, agent, failed))
        else:
            w.outcomes.extend([(now, agent, failed)] * n)
        w.attempts += n
        w.failures += failed * n
        counts = w.per_agent.get(agent)
        if counts is None:
            counts = w.per_agent[agent] = [0, 0]
        counts[0] += n
        counts[1] += failed * n
        horizon = now - self.config.window_s
        outcomes = w.outcomes
        while outcomes and outcomes[0][0] <= horizon:
            self._pop(w)

    def _pop(self, w: _HandlerWindow) -> None:
        _, agent, failed = w.outcomes.popleft()
        w.attempts -= 1
        w.failures -= failed
        counts = w.per_agent[agent]
        counts[0] -= 1
        counts[1] -= failed
        if not counts[0]:
            del w.per_agent[agent]

    def _judge(self, agent: str, handler: str, now: float) -> QuarantineDecision | None:
        cfg = self.config
        w = self._windows[handler]
        attempts, failures = w.per_agent[agent]
        if failures < cfg.min_failures or failures < cfg.min_rate * attempts:
            return None
        peer_attempts, peer_failures = w.attempts - attempts, w.failures - failures
        if peer_attempts < cfg.min_peer_attempts:
            return None
        if failures * peer_attempts < cfg.peer_factor * peer_failures * attempts:
            return None
        if not self._healthy_peers(agent, handler, w, now):
            return None
        rate, peer_rate = failures / attempts, peer_failures / peer_attempts
        why = (
            f"{failures} of its {attempts} attempts failed ({100 * rate:.0f} %) within "
            f"{cfg.window_s:g} s against {peer_failures} of {peer_attempts} "
            f"({100 * peer_rate:.0f} %) on its peers"
        )
        return self._quarantine(agent, handler, now, why)

    def _healthy_peers(self, agent: str, handler: str, w: _HandlerWindow, now: float) -> int:
        cfg = self.config
        n = 0
        for peer, (attempts, failures) in w.per_agent.items():
            if (
                peer != agent
                and attempts >= cfg.healthy_peer_attempts
                and failures <= cfg.healthy_peer_rate * attempts
                and not self.is_quarantined(peer, handler, now)
            ):
                n += 1
        return n

    def _quarantine(self, agent: str, handler: str, now: float, why: str) -> QuarantineDecision:
        cfg = self.config
        pair = (agent, handler)
        old = self._sentences.get(pair)
        strikes = 1
        if old is not None and (old.probation or now - old.released_at < cfg.stable_s):
            strikes = old.strikes + 1
        cool = min(cfg.cooldown_max_s, cfg.cooldown_s * cfg.cooldown_factor ** (strikes - 1))
        until = now + cool
        self._sentences[pair] = _Sentence(until, strikes)
        self._by_agent.setdefault(agent, set()).add(handler)
        heapq.heappush(self._timers, (until, agent, handler))
        # Judge the agent afresh after the quarantine: its old failures are already punished.
        w = self._windows.get(handler)
        counts = w.per_agent.get(agent) if w is not None else None
        decision = self._decision(
            agent,
            handler,
            QuarantineAction.QUARANTINED,
            now,
            until,
            f"agent {agent!r} quarantined for handler {handler!r} for {cool:g} s "
            f"(strike {strikes}): {why}",
            counts,
        )
        if w is not None and counts is not None:
            w.outcomes = deque(o for o in w.outcomes if o[1] != agent)
            w.attempts -= counts[0]
            w.failures -= counts[1]
            del w.per_agent[agent]
        return decision

    def _decision(
        self,
        agent: str,
        handler: str,
        action: QuarantineAction,
        now: float,
        until: float,
        reason: str,
        counts: list[int] | None = None,
    ) -> QuarantineDecision:
        w = self._windows.get(handler)
        attempts, failures = counts if counts is not None else [0, 0]
        peer_attempts = (w.attempts - attempts) if w is not None else 0
        peer_failures = (w.failures - failures) if w is not None else 0
        healthy = self._healthy_peers(agent, handler, w, now) if w is not None else 0
        return QuarantineDecision(
            agent,
            handler,
            action,
            now,
            until,
            failures,
            attempts,
            peer_failures,
            peer_attempts,
            healthy,
            reason,
        )
