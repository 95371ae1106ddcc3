"""The predictive preloader: learns which request follows which and proposes speculative
ones, spending only idle slots and spare quota, and backs off when its guesses go unused.

Model: a first-order Markov chain over request keys per handler. Within one context (a job:
DeerFlow's planner issues a topic's searches in a recognisable order, and identical plans recur
across jobs, docs/WORKLOAD.md) each request is a transition from the context's previous request.
A proposal follows the most probable successors (at least ``preload_min_support`` sightings and
``preload_min_probability`` of the predecessor's transitions) up to three steps ahead, skipping
anything already fresh in the cache or running.

Back-off: every preload is judged *useful* (hit before it expires or ``preload_useful_window_s``
passes) or *wasted*. After every ``preload_judge_every`` judgements the budget (speculative
tasks in flight) halves if the useful share fell below ``preload_min_ratio``, and grows by one
if it is at least twice that."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from deerflow_controller.cache.config import CacheConfig
from deerflow_controller.cache.keys import RequestKey

_MAX_KNOWN = 50_000
_MAX_CONTEXTS = 10_000


@dataclass(frozen=True, slots=True)
class Speculation:
    """A request worth running before anyone asks: submit it as a low-priority task with the
    same handler and payload, and report it with ``ResultCache.complete(..., speculative=True)``
    or ``ResultCache.fail``."""

    key: RequestKey
    payload: bytes
    probability: float


class Preloader:
    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.budget = config.preload_budget
        self.inflight = 0
        self.proposed = 0
        self.stored = 0
        self.useful = 0
        self.wasted = 0
        self._known: OrderedDict[bytes, tuple[RequestKey, bytes]] = OrderedDict()
        self._next: dict[bytes, dict[bytes, int]] = {}
        self._last: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._running: set[bytes] = set()
        self._unjudged: dict[bytes, float] = {}
        self._queue: deque[tuple[float, bytes]] = deque()
        self._window_useful = 0
        self._window_judged = 0

    # ------------------------------------------------------------------ learning

    def observe(self, context: str, key: RequestKey, payload: bytes) -> None:
        """A request was looked up in ``context`` (a job id): learn the transition to it."""
        ctx = (context, key.handler)
        prev = self._last.get(ctx)
        if prev is not None and prev != key.digest:
            succ = self._next.setdefault(prev, {})
            succ[key.digest] = succ.get(key.digest, 0) + 1
        self._last[ctx] = key.digest
        self._last.move_to_end(ctx)
        if len(self._last) > _MAX_CONTEXTS:
            self._last.popitem(last=False)
        if key.digest in self._known:
            self._known.move_to_end(key.digest)
        else:
            self._known[key.digest] = (key, payload)
            if len(self._known) > _MAX_KNOWN:
                old, _ = self._known.popitem(last=False)
                self._next.pop(old, None)

    # ------------------------------------------------------------------ proposing

    def admit(self, idle_slots: int, spare_quota: float) -> int:
        """How many speculative tasks may start now: none unless a slot is idle and the rate
        key has room, and never more than the (backed-off) budget left."""
        if idle_slots <= 0 or spare_quota < 1.0:
            return 0
        return max(0, min(self.budget - self.inflight, idle_slots, int(spare_quota)))

    def propose(
        self,
        context: str,
        handler: str,
        allowed: int,
        skip: Callable[[bytes], bool],
    ) -> list[Speculation]:
        """Up to ``allowed`` likely next requests of ``context`` that ``skip`` (fresh in the
        cache, or running) does not rule out. Marks them running."""
        if allowed <= 0:
            return []
        cur = self._last.get((context, handler))
        out: list[Speculation] = []
        prob = 1.0
        seen: set[bytes] = set()
        for _ in range(3):
            if cur is None or len(out) >= allowed:
                break
            succ = self._next.get(cur)
            if not succ:
                break
            total = sum(succ.values())
            nxt, count = max(succ.items(), key=lambda kv: kv[1])
            p = count / total
            if count < self.config.preload_min_support or p < self.config.preload_min_probability:
                break
            prob *= p
            if nxt in seen:
                break
            seen.add(nxt)
            known = self._known.get(nxt)
            if known is not None and nxt not in self._running and not skip(nxt):
                out.append(Speculation(known[0], known[1], prob))
                self._running.add(nxt)
            cur = nxt
        self.inflight += len(out)
        self.proposed += len(out)
        return out

    # ------------------------------------------------------------------ outcomes

    def is_running(self, digest: bytes) -> bool:
        return digest in self._running

    def stored_result(self, digest: bytes, now: float) -> None:
        """A speculative task's result landed in the cache."""
        if digest in self._running:
            self._running.discard(digest)
            self.inflight -= 1
        self.stored += 1
        self._unjudged[digest] = now
        self._queue.append((now, digest))

    def failed(self, digest: bytes) -> None:
        if digest in self._running:
            self._running.discard(digest)
            self.inflight -= 1

    def hit(self, digest: bytes) -> None:
        """A real request was served a preloaded entry (first time counts)."""
        if self._unjudged.pop(digest, None) is not None:
            self.useful += 1
            self._judged(useful=True)

    def dropped(self, digest: bytes) -> None:
        """A preloaded entry left the cache."""
        if self._unjudged.pop(digest, None) is not None:
            self.wasted += 1
            self._judged(useful=False)

    def judge(self, now: float) -> None:
        """Count preloads unused for ``preload_useful_window_s`` as wasted."""
        limit = now - self.config.preload_useful_window_s
        while self._queue and self._queue[0][0] <= limit:
            _, digest = self._queue.popleft()
            self.dropped(digest)

    @property
    def useful_ratio(self) -> float:
        judged = self.useful + self.wasted
        return self.useful / judged if judged else 0.0

    def _judged(self, useful: bool) -> None:
        self._window_judged += 1
        self._window_useful += int(useful)
        if self._window_judged < self.config.preload_judge_every:
            return
        ratio = self._window_useful / self._window_judged
        if ratio < self.config.preload_min_ratio:
            self.budget = max(1, self.budget // 2)
        elif ratio >= 2 * self.config.preload_min_ratio:
            self.budget = min(self.config.preload_budget, self.budget + 1)
        self._window_judged = self._window_useful = 0
