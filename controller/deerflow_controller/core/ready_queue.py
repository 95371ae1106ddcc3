"""Ready tasks waiting for a slot: one lane per handler and label set, tenants served fairly.

An agent offers a handful of handlers, so picking its next task looks at the head of each of
its handlers' lanes: O(H x T + log n) per dispatch for T tenants waiting in a lane, never a
scan of queued tasks. Tasks that require labels sit in a lane of their own per (handler,
labels), looked at only for agents that carry those labels. Entries are removed lazily: a task
cancelled or requeued while in a lane is skipped when it reaches the top (its ``ready_seq`` no
longer matches the entry).

Within a lane, the best priority waiting always goes first. Among the tenants (``TaskSpec.tenant``)
with a task at that priority, the lane serves by weighted deficit round robin: each tenant in
turn takes as many tasks as its deficit allows, a round adding each contending tenant's weight
to its deficit, so tenants of weights 3 and 1 get three tasks and one while both wait, whatever
they submitted. Within one tenant, tasks leave in order of ``order`` (the scheduler passes the
ready time minus a weighted predicted duration: longest first within a burst, oldest first over
time), then first pushed first.

A task keeps its place: pushed again (a retry, an attempt given back by a draining or lost
agent, a task no agent could take yet) it is ranked by the order and sequence number of its
first push, ahead of tasks that became ready after it.

Membership is ``Task.ready_seq``: non-zero exactly while the task has its one live entry here,
and only this class sets it. The count of queued tasks follows membership, so pushing a task that
is already queued re-ranks it instead of counting it twice, and forgetting one that is not queued
changes nothing (issue #13: a count that drifted from membership never came back).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping

from deerflow_controller.core.model import Task, TaskState

_Entry = tuple[int, float, int, int, Task]  # (-priority, order, place, ready_seq, task)
Labels = Mapping[str, str]

_NO_WEIGHTS: Mapping[str, float] = {}
_CREDIT = 1.0 - 1e-9
"""A deficit at least this high pays for one task (a little under 1, so that sums of
fractional weights that should make 1 do)."""


def queue_key(handler: str, labels: Labels) -> str:
    """The lane a task waits in: its handler, plus the labels it requires, if any."""
    if not labels:
        return handler
    return handler + "\x00" + "\x00".join(f"{k}={v}" for k, v in sorted(labels.items()))


def labels_match(required: Labels, offered: Labels) -> bool:
    """True when an agent carrying ``offered`` labels may run a task requiring ``required``."""
    return all(offered.get(k) == v for k, v in required.items())


class _Count:
    """The number of queued tasks, shared by a queue and its lanes."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class _Entries:
    """One tenant's entries in a lane, smallest first: a min-heap in effect. Entries pushed in
    order (a submit's burst: one priority and order, rising places) append to a sorted run,
    O(1) in and out; only an entry smaller than the run's last goes to a heap. Popping from a
    heap of a large submit's tasks was a fifth of dispatch's py-spy samples (issue #19).
    Entries are never equal (each has its own ``ready_seq``)."""

    __slots__ = ("heap", "run")

    def __init__(self) -> None:
        self.run: deque[_Entry] = deque()
        self.heap: list[_Entry] = []

    def __len__(self) -> int:
        return len(self.run) + len(self.heap)

    def __iter__(self) -> Iterator[_Entry]:
        yield from self.run
        yield from self.heap

    def push(self, entry: _Entry) -> None:
        run = self.run
        if not run or entry > run[-1]:
            run.append(entry)
        else:
            heapq.heappush(self.heap, entry)

    def first(self) -> _Entry | None:
        """The smallest entry, or None when there is none."""
        run, heap = self.run, self.heap
        if heap:
            return run[0] if run and run[0] < heap[0] else heap[0]
        return run[0] if run else None

    def pop(self) -> _Entry:
        """Remove and return the smallest entry (there must be one)."""
        run, heap = self.run, self.heap
        if heap and (not run or heap[0] < run[0]):
            return heapq.heappop(heap)
        return run.popleft()


def _live(entries: _Entries, count: _Count) -> _Entry | None:
    """Drop stale entries from the front of ``entries``; the first live one, or None. A member
    whose state changed without :meth:`ReadyQueue.discard` (a bug elsewhere) is forgotten too,
    so the count stays true."""
    while (entry := entries.first()) is not None:
        task = entry[4]
        if task.ready_seq == entry[3]:
            if task.state == TaskState.QUEUED:
                return entry
            task.ready_seq = 0
            count.n -= 1
        entries.pop()
    return None


class _Lane:
    """The ready tasks of one handler and label set: each tenant's entries in order, and the
    deficit round robin that picks which tenant's head goes next."""

    __slots__ = ("chosen", "count", "deficit", "handler", "labels", "tenants", "turns")

    def __init__(self, handler: str, labels: Labels, count: _Count) -> None:
        self.count = count
        self.handler = handler
        self.labels = labels
        self.tenants: dict[str, _Entries] = {}
        self.turns: list[str] = []
        """Tenants with entries, in round-robin order: the first with credit goes next."""
        self.deficit: dict[str, float] = {}
        """Tasks each tenant may still take in its current turn (fractions carry over)."""
        self.chosen = ""
        """The tenant whose head :meth:`head` last returned (what :meth:`pop` takes)."""

    def push(self, tenant: str, entry: _Entry) -> None:
        entries = self.tenants.get(tenant)
        if entries is None:
            entries = self.tenants[tenant] = _Entries()
            self.turns.append(tenant)
            self.deficit[tenant] = 0.0
        entries.push(entry)

    def head(self, weights: Mapping[str, float]) -> _Entry | None:
        """The entry this lane serves next (None when it holds no live task); :meth:`pop`
        removes it. Asking again without popping returns the same entry."""
        tenants = self.tenants
        if len(tenants) == 1:
            # One tenant (the common case): no turns to take.
            tenant = self.turns[0]
            entry = _live(tenants[tenant], self.count)
            if entry is not None:
                self.chosen = tenant
                return entry
            self._forget(tenant)
            return None
        # One pass: the best priority waiting, and the first tenant in turn at that priority
        # whose deficit pays for a task. A tenant's head is live unless it was discarded (then
        # its entries are cleaned, and the tenant forgotten if nothing live is left).
        deficit = self.deficit
        count = self.count
        top = 0
        firsts: dict[str, _Entry] = {}
        # None, not "": the default tenant is the empty string, and it can be the one chosen.
        chosen: str | None = None
        gone: list[str] | None = None
        for tenant in self.turns:
            entry = _live(tenants[tenant], count)
            if entry is None:
                gone = [*(gone or ()), tenant]
                continue
            priority = entry[0]
            if not firsts or priority < top:
                top = priority
                chosen = tenant if deficit[tenant] >= _CREDIT else None
            elif priority == top and chosen is None and deficit[tenant] >= _CREDIT:
                chosen = tenant
            firsts[tenant] = entry
        if gone:
            for tenant in gone:
                self._forget(tenant)
        if not firsts:
            return None
        if chosen is not None:
            self.chosen = chosen
            return firsts[chosen]
        # A new round: every contending tenant's deficit grows by its weight, as many times as
        # it takes for one of them to afford a task; the first in turn that can goes.
        contending = [t for t in self.turns if firsts[t][0] == top]
        rounds = max(
            1, min(math.ceil((1.0 - deficit[t]) / weights.get(t, 1.0)) for t in contending)
        )
        for tenant in contending:
            deficit[tenant] += rounds * weights.get(tenant, 1.0)
            if chosen is None and deficit[tenant] >= _CREDIT:
                chosen = tenant
        assert chosen is not None, "a round of the deficit round robin gave no tenant a task"
        self.chosen = chosen
        return firsts[chosen]

    def pop(self) -> Task:
        """Remove the entry :meth:`head` returned; the tenant's turn ends when its deficit
        cannot pay for another task (it goes to the back of the round)."""
        tenant = self.chosen
        entries = self.tenants[tenant]
        task = entries.pop()[4]
        if len(self.tenants) > 1:
            deficit = self.deficit[tenant] - 1.0
            self.deficit[tenant] = deficit
            if deficit < _CREDIT:
                self.turns.remove(tenant)
                self.turns.append(tenant)
        if not entries:
            self._forget(tenant)
        return task

    def _forget(self, tenant: str) -> None:
        """A tenant with nothing waiting leaves the round; its deficit does not carry over
        (as in deficit round robin: an idle tenant saves no credit)."""
        del self.tenants[tenant]
        del self.deficit[tenant]
        self.turns.remove(tenant)

    def live(self) -> bool:
        return any(_live(entries, self.count) is not None for entries in self.tenants.values())

    def entries(self) -> list[_Entry]:
        return [e for entries in self.tenants.values() for e in entries]


class ReadyQueue:
    """Ready tasks by lane (handler and required labels); see the module docstring.

    ``tenant_weights`` maps a tenant to its share within a priority (tenants not listed weigh
    1.0); every weight must be finite and positive."""

    def __init__(self, tenant_weights: Mapping[str, float] | None = None) -> None:
        self._lanes: dict[str, _Lane] = {}
        self._labelled: dict[str, dict[str, Labels]] = {}
        """handler -> {queue key: required labels} for lanes of tasks that require labels."""
        self._seq = 0
        self._count = _Count()
        weights = dict(tenant_weights or _NO_WEIGHTS)
        for tenant, weight in weights.items():
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"tenant {tenant!r} has weight {weight!r}; use a positive number")
        self._weights = weights

    def __len__(self) -> int:
        return self._count.n

    def push(self, task: Task, now: float, order: float | None = None) -> None:
        """Queue a ready task; ``order`` ranks it within its tenant and priority (default:
        ``now``). A task pushed before keeps the order and place of its first push; a task
        already queued is re-ranked: its earlier entry goes stale, and it is still counted once."""
        if not task.ready_seq:
            self._count.n += 1
        self._seq += 1
        task.ready_seq = self._seq
        task.ready_at = now
        task.state = TaskState.QUEUED
        if not task.queue_place:
            task.queue_place = self._seq
            task.queue_order = now if order is None else order
        spec = task.spec
        key = spec.handler
        if spec.labels:
            key = queue_key(key, spec.labels)
            self._labelled.setdefault(spec.handler, {})[key] = spec.labels
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(spec.handler, spec.labels, self._count)
        lane.push(
            spec.tenant, (-spec.priority, task.queue_order, task.queue_place, self._seq, task)
        )

    def discard(self, task: Task) -> None:
        """Forget a queued task (cancelled, failed): its entry is skipped later. A task that is
        not queued is left alone."""
        if task.ready_seq:
            task.ready_seq = 0
            self._count.n -= 1

    def pop_for(self, handlers: Iterable[str], labels: Labels | None = None) -> Task | None:
        """Remove and return the best ready task whose handler is in ``handlers`` and whose
        required labels the agent's ``labels`` carry: the best of the lanes' next entries."""
        best: _Lane | None = None
        best_entry: _Entry | None = None
        lanes, labelled, weights = self._lanes, self._labelled, self._weights
        for name in handlers:
            lane = lanes.get(name)
            if lane is not None:
                entry = lane.head(weights)
                if entry is not None and (best_entry is None or entry < best_entry):
                    best, best_entry = lane, entry
            if labelled and labels is not None and name in labelled:
                for key, required in labelled[name].items():
                    lane = lanes.get(key)
                    if lane is not None and labels_match(required, labels):
                        entry = lane.head(weights)
                        if entry is not None and (best_entry is None or entry < best_entry):
                            best, best_entry = lane, entry
        if best is None:
            return None
        task = best.pop()
        task.ready_seq = 0
        self._count.n -= 1
        return task

    def waiting(self) -> list[tuple[str, Labels]]:
        """(handler, required labels) of every lane with at least one live queued task."""
        return [(lane.handler, lane.labels) for lane in self._lanes.values() if lane.live()]

    def handlers_waiting(self) -> list[str]:
        """Handlers with at least one live queued task."""
        return sorted({handler for handler, _ in self.waiting()})

    def drain(self, handler: str, labels: Labels | None = None) -> list[Task]:
        """Remove and return every live queued task of one lane (handler and required labels),
        in no particular order."""
        key = queue_key(handler, labels or {})
        lane = self._lanes.pop(key, None)
        if key != handler:
            self._labelled.get(handler, {}).pop(key, None)
        if lane is None:
            return []
        members = [e[4] for e in lane.entries() if e[4].ready_seq == e[3]]
        for t in members:
            t.ready_seq = 0
        self._count.n -= len(members)
        return [t for t in members if t.state == TaskState.QUEUED]

    def drain_handler(self, name: str) -> list[Task]:
        """Remove and return every live queued task of one handler that requires no labels."""
        return self.drain(name)
