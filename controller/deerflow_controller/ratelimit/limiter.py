"""The gate: enforces each rate key's limits on the tasks that carry it, cluster-wide.

Tasks whose keys have no room wait here (THROTTLED), never on agents. A task is admitted when
every one of its keys has room; admission charges one request and the estimated tokens to each
key and takes one of its concurrency slots until the attempt ends. Tenants waiting on one key
are served round-robin; within a tenant, by priority then arrival (a retried task keeps the
place of its first wait).

A task waits in the line of one key at a time: the first, then whichever key last lacked room.
So a task with keys ``a`` and ``b`` whose ``b`` is full waits in ``b``'s line, and the tasks
behind it on ``a`` go on (no head-of-line blocking); when ``b`` has room it is checked against
``a`` again, and waits in ``a``'s line, in its old place, should ``a`` be full by then.

Gates are created on a key's first use and evicted when idle (nothing waits, no slot held,
not paused, every bucket full again and no admission left in a slope window), so a flood of
unique keys does not keep memory for ever: :meth:`RateLimiter.sweep` runs when the gates have
doubled since the last one or ``SWEEP_EVERY_S`` passed, from :meth:`RateLimiter.offer`, so its
cost is amortised over the gates created. An idle gate holds nothing a fresh one would not,
except what it learned from the provider: a key that saw a 429, an empty budget or a stated
limit is kept (it would otherwise start again from the conservative initial rate and
concurrency and pay a 429 or more to learn it again), up to ``MAX_IDLE_LEARNED_GATES``; past
that, the oldest learned ones go too. An evicted key's counters (``KeyStats``) go with it.
Dispatch walks only the gates that have tasks waiting, never all of them.

Nothing here does I/O or reads a clock: the scheduler passes ``now`` and asks, after each
change, which tasks may go (:meth:`RateLimiter.release`) and when to ask again
(:meth:`RateLimiter.next_release`).
"""

from __future__ import annotations

import collections
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from deerflow_common import provider_codes, signals
from deerflow_controller.core.model import Task, TaskState
from deerflow_controller.ratelimit.algorithms import AimdConcurrency, RateLearner
from deerflow_controller.ratelimit.buckets import SlopeWindow, TokenBucket
from deerflow_controller.ratelimit.limits import KeyLimits, LimiterConfig

DEFAULT_PAUSE_S = 1.0
"""Pause after a 429 that names no Retry-After (Tavily sends none)."""
OBSERVE_WINDOW_S = 5.0
TOKEN_EWMA = 0.1
SWEEP_EVERY_S = 60.0
"""Idle gates are evicted at least this often (seconds) while rate-keyed tasks arrive."""
MIN_SWEEP_GATES = 1024
"""No sweep for growth below this many gates."""
MAX_IDLE_LEARNED_GATES = 10_000
"""Idle gates that learned something kept at most; past it the oldest go as well."""


@dataclass(slots=True)
class KeyStats:
    admitted: int = 0
    waited: int = 0
    """Tasks that had to wait THROTTLED on this key."""
    rate_limited: int = 0
    """429s the provider answered for this key."""
    tokens: float = 0.0
    """Tokens reported used."""
    emptied: int = 0
    """Answers that said no requests remain (the key pauses until one has come back)."""


class KeyGate:
    """One rate key's state: buckets, slope window, concurrency, pause, and its waiting tasks."""

    def __init__(self, key: str, limits: KeyLimits, now: float) -> None:
        self.key = key
        self.limits = limits
        self.stats = KeyStats()
        self.in_flight = 0
        self.paused_until = 0.0
        self.token_mean = limits.default_tokens
        self._admissions: collections.deque[float] = collections.deque()
        self.learner: RateLearner | None = None
        if limits.rpm is None and limits.adaptive:
            self.learner = RateLearner(rate=limits.initial_rps, ceiling=math.inf, last_increase=now)
        elif limits.rpm is not None and limits.adaptive:
            self.learner = RateLearner(
                rate=limits.rpm / 60.0, ceiling=limits.rpm / 60.0, last_increase=now
            )
        self.requests: TokenBucket | None = None
        rate = self.request_rate()
        if rate is not None:
            self.requests = TokenBucket(rate, self._depth(rate), now)
        self.tokens: TokenBucket | None = None
        if limits.tpm is not None:
            tok_rate = limits.tpm / 60.0 * limits.safety
            self.tokens = TokenBucket(tok_rate, self._depth(tok_rate), now)
        self.slope: SlopeWindow | None = None
        if limits.burst_slope is not None:
            self.slope = SlopeWindow(
                limits.burst_slope,
                limits.burst_floor_rps,
                limits.burst_window_s,
                now,
                safety=limits.safety,
                jitter_s=limits.burst_jitter_s,
            )
        self.concurrency: AimdConcurrency | None = None
        if limits.concurrency is not None or limits.adaptive:
            # Wholly unknown keys start conservative; a key whose rate is configured starts
            # wide open (its buckets already pace it) and only shrinks on overload.
            known_rate = limits.rpm is not None or limits.tpm is not None
            ceiling = self.configured_concurrency()
            start = limits.concurrency or (ceiling if known_rate else limits.initial_concurrency)
            self.concurrency = AimdConcurrency(limit=float(start), max_limit=float(ceiling))
        # Waiting tasks: one heap per tenant, tenants served in turn.
        self._queues: dict[str, list[tuple[int, int, int, Task]]] = {}
        """Per tenant: (-priority, place, token, task) entries (see :meth:`enqueue`)."""
        self._tokens = 0
        self._turns: collections.deque[str] = collections.deque()
        self.waiting = 0
        """Live THROTTLED tasks on this key (cancelled ones leave at once)."""
        self._stale = 0
        """Entries still in the heaps for tasks that left by :meth:`discard`."""

    # ----------------------------------------------------------------- limits

    def configured_concurrency(self) -> int:
        """The concurrency ceiling the key's limits give it (stated, else its maximum)."""
        return self.limits.concurrency or self.limits.max_concurrency

    def cap_concurrency(self, ceiling: int) -> None:
        """Make ``ceiling`` (0: none) the most this key's concurrency may grow to, never
        above its configured ceiling."""
        conc = self.concurrency
        if conc is None:
            return
        top = self.configured_concurrency()
        conc.max_limit = float(min(top, ceiling) if ceiling > 0 else top)
        conc.limit = min(conc.limit, conc.max_limit)

    def request_rate(self) -> float | None:
        """Requests per second we pace at, or None when unlimited."""
        lim = self.limits
        if self.learner is not None:
            return self.learner.rate * lim.safety
        return lim.rpm / 60.0 * lim.safety if lim.rpm is not None else None

    def _depth(self, rate: float) -> float:
        return max(1.0, rate * self.limits.burst_s)

    def _rate_changed(self, now: float) -> None:
        rate = self.request_rate()
        if rate is not None and self.requests is not None:
            self.requests.set_rate(rate, self._depth(rate), now)

    def tokens_for(self, task: Task) -> float:
        return task.spec.est_tokens or self.token_mean

    def has_room(self, tokens: float, now: float) -> bool:
        if now < self.paused_until:
            return False
        if self.concurrency is not None and self.in_flight >= self.concurrency.value:
            return False
        if self.requests is not None and not self.requests.can_take(1.0, now):
            return False
        if self.tokens is not None and not self.tokens.can_take(tokens, now):
            return False
        return self.slope is None or self.slope.can_take(now)

    def ready_at(self, tokens: float, now: float) -> float:
        """When time alone gives room (inf when only a finishing attempt can)."""
        if self.concurrency is not None and self.in_flight >= self.concurrency.value:
            return math.inf
        when = max(now, self.paused_until)
        if self.requests is not None:
            when = max(when, self.requests.ready_at(1.0, now))
        if self.tokens is not None:
            when = max(when, self.tokens.ready_at(tokens, now))
        if self.slope is not None:
            when = max(when, self.slope.ready_at(now))
        return when

    def charge(self, tokens: float, now: float) -> None:
        if self.requests is not None:
            self.requests.take(1.0, now)
        if self.tokens is not None:
            self.tokens.take(tokens, now)
        if self.slope is not None:
            self.slope.take(now)
        self.in_flight += 1
        self.stats.admitted += 1
        self._admissions.append(now)

    def spare(self, now: float) -> float:
        """Requests this key could admit now beyond what waits for it: 0 while anything waits
        or it has no room; the request bucket's level when it is paced; inf when unlimited."""
        if self.waiting or not self.has_room(self.token_mean, now):
            return 0.0
        spare = math.inf
        if self.requests is not None:
            spare = self.requests.available(now)
        if self.concurrency is not None:
            spare = min(spare, self.concurrency.value - self.in_flight)
        return max(0.0, spare)

    def idle(self, now: float) -> bool:
        """Nothing waits, no slot is held, not paused, every bucket is full and no admission
        is left in a slope window: a fresh gate would behave the same, bar what it learned."""
        if self.waiting or self.in_flight or now < self.paused_until:
            return False
        for bucket in (self.requests, self.tokens):
            if bucket is not None and bucket.available(now) < bucket.capacity:
                return False
        slope = self.slope
        return slope is None or slope.idle(now)

    def learned(self) -> bool:
        """Whether the provider taught this key something a fresh gate would have to learn
        again (a 429, an emptied budget, a stated limit)."""
        stats = self.stats
        learner = self.learner
        return bool(stats.rate_limited or stats.emptied or (learner is not None and learner.stated))

    def observed_rps(self, now: float) -> float:
        adm = self._admissions
        while adm and adm[0] < now - OBSERVE_WINDOW_S:
            adm.popleft()
        return len(adm) / OBSERVE_WINDOW_S

    # ----------------------------------------------------------------- waiting tasks

    def enqueue(self, task: Task, place: int) -> None:
        """Put ``task`` in this key's line, ranked by ``place`` within its tenant and priority.
        Each entry gets a fresh token (``Task.gate_seq``): an entry is live only while the token
        matches, so a task that left and waits again (keeping its place) is never taken for two
        (issue #13)."""
        self._tokens += 1
        task.gate_seq = self._tokens
        task.throttled_on = self.key
        tenant = task.spec.tenant
        queue = self._queues.get(tenant)
        if queue is None:
            queue = self._queues[tenant] = []
        if not queue:
            self._turns.append(tenant)
        heapq.heappush(queue, (-task.spec.priority, place, task.gate_seq, task))
        self.waiting += 1

    def head(self) -> Task | None:
        """The next task in turn (skipping entries no longer live), without removing it."""
        while self._turns:
            queue = self._queues[self._turns[0]]
            while queue and queue[0][2] != queue[0][3].gate_seq:
                heapq.heappop(queue)
                self._stale -= 1
            if queue:
                return queue[0][3]
            self._turns.popleft()
        return None

    def discard(self, task: Task) -> None:
        """A waiting task left without admission (cancelled, failed, its attempt taken back);
        its entry goes lazily. A task not waiting here is left alone."""
        if task.gate_seq:
            task.gate_seq = 0
            self.waiting -= 1
            self._stale += 1

    def pop_head(self) -> None:
        tenant = self._turns.popleft()
        queue = self._queues[tenant]
        heapq.heappop(queue)[3].gate_seq = 0
        self.waiting -= 1
        if queue:
            self._turns.append(tenant)  # round-robin: the tenant goes to the back


class RateLimiter:
    """Every rate key's gate, created on first use from :class:`LimiterConfig`."""

    def __init__(
        self,
        config: LimiterConfig | None = None,
        *,
        sweep_every_s: float = SWEEP_EVERY_S,
        min_sweep_gates: int = MIN_SWEEP_GATES,
    ) -> None:
        self.config = config or LimiterConfig()
        self.sweep_every_s = sweep_every_s
        self.min_sweep_gates = min_sweep_gates
        self.gates: dict[str, KeyGate] = {}
        self._busy: dict[str, KeyGate] = {}
        """The gates that may have tasks waiting (pruned as their lines empty): what
        dispatch walks."""
        self._seq = 0
        self._sweep_size = min_sweep_gates
        self._sweep_at: float | None = None
        """When the next sweep is due (None: a minute after the first offer)."""
        self.evicted = 0
        """Idle gates evicted so far."""
        self.evicted_rate_limited = 0
        """429s counted by gates since evicted (totals over all keys stay monotonic)."""
        self.max_concurrency = 0
        """A ceiling on every key's concurrency set at run time (the tuner's knob; 0: the
        configured ``max_concurrency`` of each key)."""

    def gate(self, key: str, now: float) -> KeyGate:
        gate = self.gates.get(key)
        if gate is None:
            gate = self.gates[key] = KeyGate(key, self.config.limits_for(key), now)
            if self.max_concurrency:
                gate.cap_concurrency(self.max_concurrency)
        return gate

    def sweep(self, now: float) -> None:
        """Evict idle gates (see the module docstring); O(gates)."""
        gates = self.gates
        learned: list[str] = []
        for key, gate in list(gates.items()):
            if not gate.idle(now):
                continue
            if gate.learned():
                learned.append(key)
            else:
                self._evict(key)
        for key in learned[: max(0, len(learned) - MAX_IDLE_LEARNED_GATES)]:
            self._evict(key)
        self._sweep_size = max(self.min_sweep_gates, 2 * len(gates))
        self._sweep_at = now + self.sweep_every_s

    def _evict(self, key: str) -> None:
        gate = self.gates.pop(key)
        self._busy.pop(key, None)
        self.evicted += 1
        self.evicted_rate_limited += gate.stats.rate_limited

    def set_max_concurrency(self, ceiling: int) -> None:
        """Cap every key's adaptive concurrency at ``ceiling`` (0: as configured), keys first
        used later included; a key's stated concurrency still wins when lower. A limit above a
        lowered ceiling drops to it; a raised ceiling lets AIMD grow again on successes."""
        if ceiling < 0:
            raise ValueError(f"concurrency ceiling must be >= 0, got {ceiling}")
        self.max_concurrency = ceiling
        for gate in self.gates.values():
            gate.cap_concurrency(ceiling)

    def offer(self, task: Task, now: float) -> None:
        """Queue a ready task behind its first key; :meth:`release` decides when it goes. A task
        offered again (a retry) keeps the place of its first offer."""
        if self._sweep_at is None:
            self._sweep_at = now + self.sweep_every_s
        if len(self.gates) >= self._sweep_size or now >= self._sweep_at:
            self.sweep(now)  # before the task's gates are fetched: none of them goes now
        if not task.throttle_place:
            self._seq += 1
            task.throttle_place = self._seq
        task.state = TaskState.THROTTLED
        first = task.spec.rate_keys[0]
        gate = self.gate(first, now)
        gate.enqueue(task, task.throttle_place)
        self._busy[first] = gate
        for key in task.spec.rate_keys[1:]:
            self.gate(key, now)

    def discard(self, task: Task) -> None:
        """``task`` leaves THROTTLED without admission (call before changing its state); a task
        not waiting is left alone."""
        gate = self.gates.get(task.throttled_on) if task.gate_seq else None
        if gate is not None:
            gate.discard(task)

    def release(self, now: float, limit: int | None = None) -> list[Task]:
        """Admit waiting tasks whose keys all have room now, charging them; at most ``limit``
        (what agents can take at once), so admission happens when a task can be sent.

        Under a ``limit`` the keys' lines are merged: the best head over every key (priority,
        then its place) goes first, so a scarce agent slot goes to the most urgent task
        whichever key it waits on, not to whichever key was used first."""
        out: list[Task] = []
        busy = self._busy_gates()
        if limit is None:
            for gate in busy:
                while gate.waiting:
                    task = gate.head()
                    if task is None or not self._try(gate, task, now, out):
                        break
            return out
        heads: list[tuple[int, int, int, KeyGate]] = []

        def push(i: int, gate: KeyGate) -> None:
            task = gate.head() if gate.waiting else None
            if task is not None:
                heapq.heappush(heads, (-task.spec.priority, task.throttle_place, i, gate))

        for i, gate in enumerate(busy):
            push(i, gate)
        while heads and len(out) < limit:
            _, _, i, gate = heapq.heappop(heads)
            task = gate.head()
            if task is not None and self._try(gate, task, now, out):
                push(i, gate)  # its next task (or, moved to a full key's line, the one behind)
        return out

    def _busy_gates(self) -> list[KeyGate]:
        """The gates with tasks waiting (dropping the others from ``_busy``)."""
        busy = self._busy
        for key in [k for k, g in busy.items() if not g.waiting]:
            del busy[key]
        return list(busy.values())

    def keys_have_room(self, task: Task, now: float) -> bool:
        """Whether every key of ``task`` would admit it now (it waits for something else: an
        agent slot)."""
        gates = self.gates
        for key in task.spec.rate_keys:
            gate = gates.get(key)
            if gate is not None and not gate.has_room(gate.tokens_for(task), now):
                return False
        return True

    def _try(self, gate: KeyGate, task: Task, now: float, out: list[Task]) -> bool:
        """Admit ``task``, the head of ``gate``'s line, into ``out`` if every key has room.
        Returns whether the line may go on: False when ``gate`` itself is full; True when the
        task was admitted, or moved to wait in the line of another key of its own that is full
        (so the tasks behind it here are not held up by a key they do not use)."""
        keys = task.spec.rate_keys
        # A task's other keys may have been evicted while it waited (idle: a fresh gate is
        # the same), so they are fetched, not looked up.
        gates = [self.gate(k, now) for k in keys]
        amounts = [g.tokens_for(task) for g in gates]
        full = next(
            (g for g, t in zip(gates, amounts, strict=True) if not g.has_room(t, now)),
            None,
        )
        if full is not None:
            # Demand presses on a learned request rate: let the learner probe upward.
            for g in gates:
                if (
                    g.learner is not None
                    and g.requests is not None
                    and not g.requests.can_take(1.0, now)
                ):
                    g.learner.on_pressure(now)
                    g._rate_changed(now)
            if full is gate:
                return False
            gate.pop_head()
            full.enqueue(task, task.throttle_place)
            self._busy[full.key] = full
            return True
        gate.pop_head()
        for g, t in zip(gates, amounts, strict=True):
            g.charge(t, now)
        task.rate_hold = list(zip(keys, amounts, strict=True))
        out.append(task)
        return True

    def next_release(self, now: float) -> float | None:
        """Earliest time at which waiting time alone may admit a task (None: nothing waits, or
        only a finishing attempt can make room)."""
        best = math.inf
        for gate in self._busy_gates():
            task = gate.head()
            if task is None:
                continue
            gates = [self.gate(k, now) for k in task.spec.rate_keys]
            when = max(g.ready_at(g.tokens_for(task), now) for g in gates)
            best = min(best, when)
        return None if best == math.inf else best

    def spare(self, keys: Sequence[str], now: float) -> float:
        """Least spare room over ``keys`` (see :meth:`KeyGate.spare`); a key never used has
        none yet: speculative work must not be the first to probe a provider's limit."""
        spare = math.inf
        for key in keys:
            gate = self.gates.get(key)
            spare = 0.0 if gate is None else min(spare, gate.spare(now))
        return spare

    def note_waiting(self, task: Task) -> None:
        self.gates[task.throttled_on].stats.waited += 1

    def hold_again(self, task: Task, now: float) -> None:
        """A running attempt that had given its slots back is running after all (its agent
        reclaimed it on reconnecting): it holds a concurrency slot on each of its keys again,
        charging nothing (its request was sent and paid for when it was first admitted)."""
        if task.rate_hold is not None or not task.spec.rate_keys:
            return
        for key in task.spec.rate_keys:
            self.gate(key, now).in_flight += 1
        task.rate_hold = [(key, 0.0) for key in task.spec.rate_keys]

    def end_attempt(self, task: Task) -> None:
        """The attempt holding ``task``'s slots ended (any way): give the slots back."""
        hold = task.rate_hold
        if hold is None:
            return
        task.rate_hold = None
        for key, _ in hold:
            gate = self.gates.get(key)
            if gate is not None and gate.in_flight > 0:
                gate.in_flight -= 1

    @property
    def waiting(self) -> int:
        return sum(g.waiting for g in self._busy.values())

    def observe(self, task: Task, metadata: Mapping[str, str], now: float) -> None:
        """Learn from what the provider said about ``task``'s request (before end_attempt)."""
        hold = task.rate_hold or [(k, 0.0) for k in task.spec.rate_keys]
        status = signals.number(metadata, signals.HTTP_STATUS)
        for key, charged in hold:
            gate = self.gates.get(key)
            if gate is not None:
                _learn(gate, metadata, status, charged, now)


def _learn(
    gate: KeyGate, metadata: Mapping[str, str], status: float | None, charged: float, now: float
) -> None:
    used = signals.number(metadata, signals.TOTAL_TOKENS)
    if used is not None:
        gate.stats.tokens += used
        gate.token_mean += TOKEN_EWMA * (used - gate.token_mean)
        if gate.tokens is not None and charged:
            gate.tokens.give_back(charged - used, now)
    if status == 429:
        gate.stats.rate_limited += 1
        if gate.slope is not None and provider_codes.is_burst_rate(
            metadata.get(signals.ERROR_CODE)
        ):
            gate.slope.forget_one()
        retry_after = signals.number(metadata, signals.RETRY_AFTER_S)
        gate.paused_until = max(
            gate.paused_until, now + (retry_after if retry_after is not None else DEFAULT_PAUSE_S)
        )
        if gate.concurrency is not None and gate.limits.adaptive:
            gate.concurrency.on_overload()
        if gate.learner is not None and not gate.learner.stated:
            gate.learner.on_rate_limited(gate.observed_rps(now), now)
            gate._rate_changed(now)
        return
    if status is not None and 200 <= status < 300 and gate.concurrency is not None:
        gate.concurrency.on_success()
    if not gate.limits.adaptive:
        return
    stated = signals.number(metadata, signals.LIMIT_REQUESTS)
    if stated and gate.learner is not None and gate.learner.on_stated_limit(stated):
        gate._rate_changed(now)
        conc = gate.concurrency
        if conc is not None and gate.limits.concurrency is None:
            # The rate is known now and its bucket paces the key: stop probing concurrency
            # from the conservative start (it still shrinks on overload).
            conc.limit = max(conc.limit, conc.max_limit)
    remaining = signals.number(metadata, signals.REMAINING_REQUESTS)
    reset = signals.number(metadata, signals.RESET_REQUESTS_S)
    if remaining is not None and remaining <= 0 and reset:
        gate.stats.emptied += 1
        gate.paused_until = max(gate.paused_until, now + _one_request_s(gate, stated, reset))


def _one_request_s(gate: KeyGate, stated: float | None, reset: float) -> float:
    """How long a provider that reported no requests remaining takes to have room for one.

    ``reset`` is the time until its bucket is *full* again (OpenAI's and Anthropic's
    ``*-reset-requests``), not until it has room: a key paused for all of it sits idle while
    the provider's bucket refills (a 15-deep one-second bucket that reads empty has room again
    after 1/15 s). The bucket refills at the stated per-minute limit, else at the rate we
    pace; a provider whose window really is fixed answers the next request 429 with a
    Retry-After, which pauses the key for as long as it says."""
    if stated:
        return min(reset, 60.0 / stated)
    rate = gate.request_rate()
    return min(reset, 1.0 / rate) if rate else reset
