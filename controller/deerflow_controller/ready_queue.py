"""Ready tasks waiting for a slot: one priority heap per handler and label set.

An agent offers a handful of handlers, so picking its next task looks at the head of each of
its handlers' heaps: O(H + log n) per dispatch, never a scan of queued tasks. Tasks that require
labels sit in a heap of their own per (handler, labels), looked at only for agents that carry
those labels. Entries are removed lazily: a task cancelled or requeued while in a heap is skipped
when it reaches the top (its ``ready_seq`` no longer matches the entry).

Membership is ``Task.ready_seq``: non-zero exactly while the task has its one live entry here,
and only this class sets it. The count of queued tasks follows membership, so pushing a task that
is already queued re-ranks it instead of counting it twice, and forgetting one that is not queued
changes nothing (issue #13: a count that drifted from membership never came back).

Within a priority, tasks leave in order of ``order`` (the scheduler passes the ready time minus a
weighted predicted duration: longest first within a burst, oldest first over time), then FIFO.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from .model import Task, TaskState

_Entry = tuple[int, float, int, Task]  # (-priority, order, ready_seq, task)
Labels = Mapping[str, str]


def queue_key(handler: str, labels: Labels) -> str:
    """The heap a task waits in: its handler, plus the labels it requires, if any."""
    if not labels:
        return handler
    return handler + "\x00" + "\x00".join(f"{k}={v}" for k, v in sorted(labels.items()))


def labels_match(required: Labels, offered: Labels) -> bool:
    """True when an agent carrying ``offered`` labels may run a task requiring ``required``."""
    return all(offered.get(k) == v for k, v in required.items())


class ReadyQueue:
    def __init__(self) -> None:
        self._heaps: dict[str, list[_Entry]] = {}
        self._labelled: dict[str, dict[str, Labels]] = {}
        """handler -> {queue key: required labels} for heaps of tasks that require labels."""
        self._seq = 0
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def push(self, task: Task, now: float, order: float | None = None) -> None:
        """Queue a ready task; ``order`` ranks it within its priority (default: ``now``). A task
        already queued is re-ranked: its earlier entry goes stale, and it is still counted once."""
        if not task.ready_seq:
            self._live += 1
        self._seq += 1
        task.ready_seq = self._seq
        task.ready_at = now
        task.state = TaskState.QUEUED
        spec = task.spec
        key = spec.handler
        if spec.labels:
            key = queue_key(key, spec.labels)
            self._labelled.setdefault(spec.handler, {})[key] = spec.labels
        heap = self._heaps.get(key)
        if heap is None:
            heap = self._heaps[key] = []
        heapq.heappush(heap, (-spec.priority, now if order is None else order, self._seq, task))

    def discard(self, task: Task) -> None:
        """Forget a queued task (cancelled, failed): its entry is skipped later. A task that is
        not queued is left alone."""
        if task.ready_seq:
            task.ready_seq = 0
            self._live -= 1

    def pop_for(self, handlers: Iterable[str], labels: Labels | None = None) -> Task | None:
        """Remove and return the best ready task whose handler is in ``handlers`` and whose
        required labels the agent's ``labels`` carry."""
        best: list[_Entry] | None = None
        heaps, labelled = self._heaps, self._labelled
        for name in handlers:
            heap = heaps.get(name)
            if heap:
                self._drop_stale(heap)
                if heap and (best is None or heap[0] < best[0]):
                    best = heap
            if labelled and labels is not None and name in labelled:
                for key, required in labelled[name].items():
                    heap = heaps.get(key)
                    if heap and labels_match(required, labels):
                        self._drop_stale(heap)
                        if heap and (best is None or heap[0] < best[0]):
                            best = heap
        if best is None:
            return None
        task = heapq.heappop(best)[3]
        task.ready_seq = 0
        self._live -= 1
        return task

    def waiting(self) -> list[tuple[str, Labels]]:
        """(handler, required labels) of every heap with at least one live queued task."""
        out: list[tuple[str, Labels]] = []
        for heap in self._heaps.values():
            self._drop_stale(heap)
            if heap:
                spec = heap[0][3].spec
                out.append((spec.handler, spec.labels))
        return out

    def handlers_waiting(self) -> list[str]:
        """Handlers with at least one live queued task."""
        return sorted({handler for handler, _ in self.waiting()})

    def drain(self, handler: str, labels: Labels | None = None) -> list[Task]:
        """Remove and return every live queued task of one heap (handler and required labels)."""
        key = queue_key(handler, labels or {})
        heap = self._heaps.pop(key, [])
        if key != handler:
            self._labelled.get(handler, {}).pop(key, None)
        members = [e[3] for e in heap if e[3].ready_seq == e[2]]
        for t in members:
            t.ready_seq = 0
        self._live -= len(members)
        return [t for t in members if t.state == TaskState.QUEUED]

    def drain_handler(self, name: str) -> list[Task]:
        """Remove and return every live queued task of one handler that requires no labels."""
        return self.drain(name)

    def _drop_stale(self, heap: list[_Entry]) -> None:
        """Pop entries that are no longer their task's live one. A member whose state changed
        without :meth:`discard` (a bug elsewhere) is forgotten too, so the count stays true."""
        while heap:
            _, _, seq, task = heap[0]
            if task.ready_seq == seq:
                if task.state == TaskState.QUEUED:
                    return
                task.ready_seq = 0
                self._live -= 1
            heapq.heappop(heap)
