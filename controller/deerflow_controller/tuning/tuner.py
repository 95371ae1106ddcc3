"""The AutoPerformanceTuner's decisions: a hill climb over the controller's knobs, one change at a
time, kept only when the objective improves beyond the noise.

Pure: :meth:`Tuner.step` is given the time, the :class:`Measurement` of the window since the
last step and the knobs as they are now, and answers with at most one :class:`Action` (set this
knob to this value) that the caller (the shell's tuner loop) carries out. Nothing here reads a
clock or touches the core.

The climb, per step (every ``interval_s``):

1. A window is *usable* when it began at least ``settle_s`` after the last change (attempts
   started under the old value have mostly ended) and :func:`~.objective.score` can judge it.
   A score is the objective over the usable windows at the same settings taken together
   (:func:`~.objective.pooled_score`), with its spread (how far chance alone may move it):
   at least ``judge_windows`` windows holding ``judge_min_completions`` successes (on a
   workload of a few tasks a second, two windows' p95 is a handful of tasks: noise).
2. With a trial in progress, the score of its first usable windows judges it:
   the trial is **kept** when that beats the score before it by more than the noise band
   (``noise_band`` of its size) and by more than chance (``significance_z`` times the two
   scores' combined spread), and 429s did not rise. A gain beyond the band but not yet beyond
   chance waits for more windows (up to ``max_trial_windows``); otherwise it is **reverted**
   (the knob goes back to its old value).
3. With no trial, once ``cooldown_s`` has passed since the last change, it tries the next
   candidate: after a kept change the same knob in the same direction (momentum); else each
   knob in turn (capacity first), the direction the measurement points to first (work waiting
   on full slots: more slots; 429s: a lower rate-key ceiling), the other direction only with
   the coarse step. A step multiplies or divides by
   the knob's factor (2 at first, then 1.41, then 1.25 when every candidate at a factor was
   rejected); a value once rejected, or left behind by a kept change, is not tried again
   until the workload drifts.
4. When no candidate is left at the finest factor, it has **converged**: the median of its
   next ``drift_windows`` usable windows is the reference, and it changes nothing until the
   median of the latest ``drift_windows`` leaves that reference by more than ``drift_band``
   (the workload changed, for more than half of those windows); then it climbs again from the
   coarse factor.

Why it cannot oscillate: every kept change raised the score by more than the noise band, no
value rejected or left behind is tried again, and a converged tuner moves only after a
sustained drift; two changes are always at least ``cooldown_s`` apart.

In ``observe`` mode it changes nothing: it records, at most once per cool-down, the move the
measurement points to (a *suggestion*), never the same one for a knob twice in a row.
"""

from __future__ import annotations

import collections
import enum
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deerflow_controller.tuning.knobs import (
    AGENT_SLOTS,
    KNOB_NAMES,
    PREFETCH,
    RATE_KEY_CONCURRENCY,
    Knob,
    step_value,
)
from deerflow_controller.tuning.objective import (
    Measurement,
    Objective,
    latency_parts,
    pooled_p95,
    pooled_score,
    score,
)

__all__ = ["Action", "Change", "Mode", "Outcome", "Tuner", "TunerConfig", "hint"]


class Mode(enum.Enum):
    """``--tuner``: what the tuner may do."""

    OFF = "off"
    """Nothing: no measurement, no history."""
    OBSERVE = "observe"
    """Suggest only: the history records what it would try; no setting changes."""
    ON = "on"
    """Change settings, one at a time, keeping what helps."""


class Outcome(enum.Enum):
    TRYING = "trying"
    KEPT = "kept"
    REVERTED = "reverted"
    SUGGESTED = "suggested"


@dataclass(frozen=True, slots=True)
class TunerConfig:
    """How the tuner climbs. Times in seconds on the controller's clock."""

    mode: Mode = Mode.OBSERVE
    """Observe by default: a controller that changes its own settings should be asked to; the
    suggestions show what it would do (``--tuner``)."""
    objective: Objective = Objective.THROUGHPUT
    """What it maximises (``--tuner-objective``)."""
    interval_s: float = 2.0
    """How often it measures and decides (``--tuner-interval-s``): long enough that a window
    holds many completions of sub-second tasks, short enough to climb from 1 slot to 64 in
    about half a minute."""
    noise_band: float = 0.05
    """A change counts only when it moves the score by more than this share of it: the
    run-to-run noise of a window's throughput on a busy machine is a few per cent."""
    cooldown_s: float = 2.0
    """Least time between two changes of any knob (a trial, a revert)."""
    settle_s: float = 0.0
    """Measurements in this long after a change are not used to judge it (raise it for
    tasks much longer than the interval)."""
    coarse_factor: float = 2.0
    """The first step: double or halve."""
    fine_factor: float = 1.25
    """The finest step; below it the tuner has converged."""
    drift_windows: int = 10
    """Usable windows whose median, once converged, is the reference, and is checked against
    it: a median, so that a few seconds of someone else's load on the machine do not count as
    a changed workload."""
    drift_band: float = 0.2
    """Share of the converged reference the recent median must leave before the tuner climbs
    again: wide, as a converged tuner that wakes on noise would keep probing."""
    judge_windows: int = 2
    """Usable windows averaged for a score: the baseline before a change and the trial after
    it (one window of a busy shared machine is too noisy to judge by)."""
    significance_z: float = 1.0
    """A gain must exceed this many times the combined spread of the two scores (each a ~95 %
    half-width) to count: 1.0 is a difference about 2.8 standard errors wide."""
    judge_min_completions: int = 100
    """Successes a score needs, pooled over its windows: fewer make a p95 or a rate mostly
    noise (a research workload finishes about 13 tasks a second: a 2-s window holds ~26, so a
    score there takes about four windows; at thousands a second, two windows hold plenty)."""
    max_trial_windows: int = 10
    """Windows a trial may wait for enough usable ones (little load) before it is reverted;
    also the most windows a score pools."""
    history: int = 200
    """Changes and suggestions kept (the oldest go first)."""
    min_completions: int = 10
    """Successes a window needs to judge anything."""

    def __post_init__(self) -> None:
        for name in (
            "interval_s",
            "noise_band",
            "cooldown_s",
            "settle_s",
            "drift_band",
            "significance_z",
        ):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"tuner {name} must be a finite number >= 0, got {v!r}")
        if self.interval_s <= 0:
            raise ValueError(f"tuner interval_s must be above 0, got {self.interval_s!r}")
        if not (math.isfinite(self.fine_factor) and 1.0 < self.fine_factor <= self.coarse_factor):
            raise ValueError("tuner factors must satisfy 1 < fine_factor <= coarse_factor")
        if not math.isfinite(self.coarse_factor):
            raise ValueError("tuner coarse_factor must be finite")
        counts = (
            self.history,
            self.drift_windows,
            self.max_trial_windows,
            self.judge_windows,
            self.judge_min_completions,
        )
        if min(counts) < 1:
            raise ValueError(
                "tuner history, drift_windows, max_trial_windows, judge_windows and "
                "judge_min_completions must be >= 1"
            )


@dataclass(slots=True)
class Change:
    """One entry of the history: a change (its outcome filled in when judged) or a
    suggestion."""

    seq: int
    at: float
    knob: str
    old: int
    new: int
    reason: str
    """Why it was tried: the numbers that pointed to it."""
    objective: str
    before: float
    """The objective's score before (higher is better; latency and cost are negated)."""
    before_detail: str
    after: float | None = None
    after_detail: str = ""
    outcome: Outcome = Outcome.TRYING
    verdict: str = ""
    """Why it was kept or reverted."""
    judged_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "knob": self.knob,
            "old": self.old,
            "new": self.new,
            "reason": self.reason,
            "objective": self.objective,
            "before": self.before,
            "before_detail": self.before_detail,
            "after": self.after,
            "after_detail": self.after_detail,
            "outcome": self.outcome.value,
            "verdict": self.verdict,
            "judged_at": self.judged_at,
        }


@dataclass(frozen=True, slots=True)
class Action:
    """Set ``knob`` to ``value`` now; ``change`` is the history entry it belongs to."""

    knob: str
    value: int
    change: Change


def hint(name: str, m: Measurement) -> int:
    """The direction the measurement points a knob to: +1, -1, or 0 (no signal)."""
    if name in (AGENT_SLOTS, PREFETCH):
        if m.queued > 0 and m.saturated:
            return 1  # work waits while every slot is busy
        if name == AGENT_SLOTS and m.rate_limited > 0 and m.queued == 0:
            return -1
        return 0
    if name == RATE_KEY_CONCURRENCY:
        return -1 if m.rate_limited > 0 else 0
    return 0


def _signal(name: str, direction: int, m: Measurement) -> str:
    if direction > 0:
        return f"{m.queued} tasks waited while the agents' slots were full"
    if m.rate_limited > 0:
        return f"providers answered {m.rate_limited} requests with 429"
    return "probing the other side"


@dataclass(slots=True)
class _Climb:
    """The climb's memory between kept changes."""

    factor: dict[str, float] = field(default_factory=dict)
    rejected: set[tuple[str, int]] = field(default_factory=set)
    momentum: tuple[str, int] | None = None
    converged: float | None = None
    """The reference score once converged (nan while it is being measured; None while
    climbing)."""
    recent: list[float] = field(default_factory=list)
    """Once converged: the latest usable windows' scores."""


class Tuner:
    """See the module docstring. Not thread-safe; one per controller."""

    def __init__(self, config: TunerConfig | None = None) -> None:
        self.config = config or TunerConfig()
        self.history: collections.deque[Change] = collections.deque(maxlen=self.config.history)
        self._seq = 0
        self._trial: Change | None = None
        self._trial_windows = 0
        self._last_action_at = -math.inf
        self._windows: list[tuple[float, Measurement]] = []
        """The latest usable windows (score, counts) at the current settings, at most
        ``max(judge_windows, max_trial_windows)``: the baseline of the next trial, or the
        trial's own."""
        self._keep = max(self.config.judge_windows, self.config.max_trial_windows)
        self._before_429 = 0.0
        self._before_spread = 0.0
        self._before_parts: tuple[float, float, float, float] | None = None
        self._climb = _Climb()
        self._suggested: dict[str, tuple[int, int]] = {}
        """Observe mode: each knob's last suggestion (old, new), not repeated."""

    @property
    def converged(self) -> bool:
        return self._climb.converged is not None

    @property
    def trial(self) -> Change | None:
        return self._trial

    def _factor(self, name: str) -> float:
        return self._climb.factor.get(name, self.config.coarse_factor)

    # ------------------------------------------------------------------ the step

    def step(self, now: float, m: Measurement, knobs: Mapping[str, Knob]) -> Action | None:
        """Judge the running trial or start the next one (see the module docstring).
        ``knobs``: the knobs that apply now, by name (a knob absent is not turned)."""
        cfg = self.config
        if cfg.mode is Mode.OFF:
            return None
        usable = m.start >= self._last_action_at + cfg.settle_s
        s = score(cfg.objective, m, cfg.min_completions) if usable else None
        if s is not None:
            self._windows.append((s, m))
            del self._windows[: -self._keep]
        if self._trial is not None:
            return self._judge(now, knobs)
        if s is None:
            return None
        mean = self._score()
        if mean is None or now - self._last_action_at < cfg.cooldown_s:
            return None
        if cfg.mode is Mode.OBSERVE:
            self._suggest(now, m, mean, knobs)
            return None
        if self._climb.converged is not None and not self._drifted(s):
            return None
        return self._explore(now, m, mean, knobs)

    def _judged(self) -> list[Measurement]:
        """The windows a score is taken over: every usable one at the current settings (the
        latest ``max(judge_windows, max_trial_windows)``), once they are ``judge_windows``
        holding ``judge_min_completions`` successes; [] before."""
        cfg = self.config
        ms = [m for _, m in self._windows]
        if len(ms) < cfg.judge_windows or sum(m.succeeded for m in ms) < cfg.judge_min_completions:
            return []
        return ms

    def _scored(self) -> tuple[float, float] | None:
        """The score and its spread, or None while the windows are too few."""
        windows = self._judged()
        return pooled_score(self.config.objective, windows) if windows else None

    def _score(self) -> float | None:
        scored = self._scored()
        return None if scored is None else scored[0]

    def _detail(self) -> str:
        ms = self._judged() or [m for _, m in self._windows]
        seconds = math.fsum(m.seconds for m in ms)
        done = sum(m.succeeded for m in ms)
        # The p95 the latency objective judges by: the windows' samples pooled.
        p95, _ = pooled_p95(ms)
        return (
            f"{done / seconds if seconds else 0.0:.1f} tasks/s, p95 {p95 * 1000:.0f} ms, "
            f"{sum(m.failed for m in ms)} failed, {sum(m.rate_limited for m in ms)} 429s "
            f"over {seconds:.1f} s"
        )

    def _rate_limited(self) -> float:
        """429s per second over the windows a score is taken over."""
        ms = self._judged() or [m for _, m in self._windows]
        seconds = math.fsum(m.seconds for m in ms)
        return sum(m.rate_limited for m in ms) / seconds if seconds else 0.0

    def _drifted(self, s: float) -> bool:
        climb, n = self._climb, self.config.drift_windows
        assert climb.converged is not None
        climb.recent.append(s)
        del climb.recent[:-n]
        if len(climb.recent) < n:
            return False
        middle = statistics.median(climb.recent)
        if math.isnan(climb.converged):
            climb.converged = middle  # the reference: the first windows after converging
            return False
        if abs(middle - climb.converged) <= self.config.drift_band * abs(climb.converged):
            return False
        self._climb = _Climb()  # the workload changed: climb again from the coarse step
        return True

    def _judge(self, now: float, knobs: Mapping[str, Knob]) -> Action | None:
        trial = self._trial
        assert trial is not None
        cfg = self.config
        knob = knobs.get(trial.knob)
        if knob is None:
            self._end(trial, now, Outcome.REVERTED, "the knob no longer applies")
            return None
        if now - self._last_action_at < cfg.cooldown_s:
            return None  # even a revert waits for the cool-down
        self._trial_windows += 1
        scored = self._scored()
        if scored is None:
            harm = self._early_harm(trial)
            if harm is not None:
                return self._revert(trial, now, knob, harm)
            if self._trial_windows < cfg.max_trial_windows:
                return None
            return self._revert(trial, now, knob, "no window could judge it (too little load)")
        after, spread = scored
        trial.after, trial.after_detail = after, self._detail()
        band = cfg.noise_band * abs(trial.before)
        chance = cfg.significance_z * math.hypot(self._before_spread, spread)
        more_429 = self._rate_limited() > self._before_429 * (1 + cfg.noise_band) + 1.0
        gained = after > trial.before + band
        if gained and not more_429 and after <= trial.before + chance:
            kept = self._wait_gain(trial)
            if kept is not None:
                return self._keep_trial(now, trial, kept, after, knobs)
            if self._trial_windows < cfg.max_trial_windows:
                return None  # beyond the band, not yet beyond chance: measure longer
            return self._revert(
                trial, now, knob, f"a gain of {_pct(after, trial.before)} within chance"
            )
        if gained and not more_429:
            rose = f"the objective rose by {_pct(after, trial.before)}"
            return self._keep_trial(now, trial, rose, after, knobs)
        if more_429:
            verdict = f"429s rose to {self._rate_limited():.1f}/s"
        elif after < trial.before - band:
            verdict = f"the objective fell by {_pct(trial.before, after)}"
        else:
            verdict = f"no gain beyond the {cfg.noise_band:.0%} noise band"
        return self._revert(trial, now, knob, verdict)

    def _wait_gain(self, trial: Change) -> str | None:
        """For a capacity trial under the latency objective whose gain is past the band but
        not past chance: why to keep it anyway, when the part of the latency a capacity knob
        moves, the wait for an agent, fell beyond chance on its own and run times did not rise
        beyond theirs (the run times' spread, which the knob does not move, is most of the
        score's); None otherwise."""
        cfg = self.config
        if cfg.objective is not Objective.LATENCY or trial.knob not in (AGENT_SLOTS, PREFETCH):
            return None
        before, after = self._before_parts, latency_parts(self._judged())
        if before is None or after is None:
            return None
        wait_b, wait_bs, run_b, run_bs = before
        wait_a, wait_as, run_a, run_as = after
        z = cfg.significance_z
        if wait_b - wait_a <= z * (wait_bs + wait_as):
            return None
        if run_a - run_b > z * (run_bs + run_as):
            return None
        return (
            f"the wait for an agent fell by {_pct(wait_a, wait_b)} (p95 {wait_b * 1000:.0f} -> "
            f"{wait_a * 1000:.0f} ms), beyond chance, and run times did not rise beyond theirs"
        )

    def _keep_trial(
        self, now: float, trial: Change, why: str, after: float, knobs: Mapping[str, Knob]
    ) -> Action | None:
        """Keep ``trial`` (``why``) and, past the cool-down, try the next candidate."""
        self._end(trial, now, Outcome.KEPT, why)
        climb = self._climb
        # What it came from is worse: never go back there (until the workload drifts).
        climb.rejected.add((trial.knob, trial.old))
        climb.momentum = (trial.knob, 1 if trial.new > trial.old else -1)
        if now - self._last_action_at >= self.config.cooldown_s:
            return self._explore(now, self._windows[-1][1], after, knobs)
        return None

    def _early_harm(self, trial: Change) -> str | None:
        """Why to revert ``trial`` before its windows are enough to judge a gain: its windows
        so far already show the objective worse beyond the band and beyond chance (a trial
        that lowers capacity under an open workload builds a backlog that outlives it, so it
        is not left to run its full measurement)."""
        if not self._windows:
            return None
        early = pooled_score(self.config.objective, [m for _, m in self._windows])
        if early is None:
            return None
        after, spread = early
        band = self.config.noise_band * abs(trial.before)
        chance = self.config.significance_z * math.hypot(self._before_spread, spread)
        if after >= trial.before - max(band, chance):
            return None
        trial.after, trial.after_detail = after, self._detail()
        return f"the objective fell by {_pct(trial.before, after)} already"

    def _revert(self, trial: Change, now: float, knob: Knob, verdict: str) -> Action | None:
        self._end(trial, now, Outcome.REVERTED, verdict)
        self._climb.rejected.add((trial.knob, trial.new))
        self._climb.momentum = None
        old = knob.clamp(trial.old)
        if old == knob.value:
            return None
        self._acted(now)
        return Action(trial.knob, old, trial)

    def _acted(self, now: float) -> None:
        """A knob changed: windows measured before say nothing about the new settings."""
        self._last_action_at = now
        self._windows.clear()

    def _end(self, trial: Change, now: float, outcome: Outcome, verdict: str) -> None:
        trial.outcome, trial.verdict, trial.judged_at = outcome, verdict, now
        self._trial = None
        self._trial_windows = 0

    # ------------------------------------------------------------------ exploring

    def _candidates(self, m: Measurement, knobs: Mapping[str, Knob]) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        momentum = self._climb.momentum
        if momentum is not None and momentum[0] in knobs:
            out.append(momentum)
        for name in KNOB_NAMES:
            if name not in knobs:
                continue
            pointed = hint(name, m)
            first = pointed or 1
            out.append((name, first))
            # Against what the measurement points to, only the coarse step: it finds an
            # optimum below a start set too high, and costs one trial, not one per refinement.
            if not pointed or self._factor(name) >= self.config.coarse_factor:
                out.append((name, -first))
        return out

    def _explore(
        self, now: float, m: Measurement, s: float, knobs: Mapping[str, Knob]
    ) -> Action | None:
        climb, cfg = self._climb, self.config
        while True:
            for name, direction in self._candidates(m, knobs):
                knob = knobs[name]
                new = step_value(knob, direction, self._factor(name))
                if new == knob.value or (name, new) in climb.rejected:
                    continue
                factor = self._factor(name)
                why = (
                    f"{_signal(name, direction, m)}; step x{factor:.2f}"
                    if direction == hint(name, m)
                    else f"trying {'up' if direction > 0 else 'down'}, step x{factor:.2f}"
                )
                return self._try(now, m, s, knob, new, why)
            # Every candidate at this step was rejected: refine, or stop.
            refined = False
            for name in knobs:
                f = self._factor(name)
                if f > cfg.fine_factor:
                    climb.factor[name] = max(cfg.fine_factor, math.sqrt(f))
                    refined = True
            climb.momentum = None
            if not refined:
                climb.converged, climb.recent = math.nan, []
                return None

    def _try(self, now: float, m: Measurement, s: float, knob: Knob, new: int, why: str) -> Action:
        change = self._record(now, m, s, knob, new, why, Outcome.TRYING)
        self._trial = change
        self._trial_windows = 0
        self._before_429 = self._rate_limited()
        scored = self._scored()
        self._before_spread = 0.0 if scored is None else scored[1]
        self._before_parts = latency_parts([m for _, m in self._windows])
        self._acted(now)
        return Action(knob.name, new, change)

    def _suggest(self, now: float, m: Measurement, s: float, knobs: Mapping[str, Knob]) -> None:
        for name in KNOB_NAMES:
            knob = knobs.get(name)
            direction = hint(name, m)
            if knob is None or direction == 0:
                continue
            new = step_value(knob, direction, self.config.coarse_factor)
            if new == knob.value or self._suggested.get(name) == (knob.value, new):
                continue
            self._suggested[name] = (knob.value, new)
            self._record(now, m, s, knob, new, _signal(name, direction, m), Outcome.SUGGESTED)
            self._last_action_at = now  # the cool-down spaces suggestions as it spaces changes
            return

    def _record(
        self, now: float, m: Measurement, s: float, knob: Knob, new: int, why: str, out: Outcome
    ) -> Change:
        self._seq += 1
        change = Change(
            seq=self._seq,
            at=now,
            knob=knob.name,
            old=knob.value,
            new=new,
            reason=why,
            objective=self.config.objective.value,
            before=s,
            before_detail=self._detail() if self._windows else m.describe(),
            outcome=out,
        )
        self.history.append(change)
        return change


def _rate(n: int, m: Measurement) -> float:
    return n / m.seconds if m.seconds > 0 else 0.0


def _pct(a: float, b: float) -> str:
    return f"{abs(a - b) / abs(b):.0%}" if b else "from zero"
