"""Ready tasks waiting for a slot: one priority heap per handler.

An agent offers a handful of handlers, so picking its next task looks at the head of each of
its handlers' heaps: O(H + log n) per dispatch, never a scan of queued tasks. Entries are
removed lazily: a task cancelled or requeued while in a heap is skipped when it reaches the top
(its ``ready_seq`` no longer matches the entry).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from .model import Task, TaskState

_Entry = tuple[int, int, Task]  # (-priority, ready_seq, task)


class ReadyQueue:
    def __init__(self) -> None:
        self._heaps: dict[str, list[_Entry]] = {}
        self._seq = 0
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def push(self, task: Task, now: float) -> None:
        self._seq += 1
        task.ready_seq = self._seq
        task.ready_at = now
        task.state = TaskState.QUEUED
        heap = self._heaps.get(task.spec.handler)
        if heap is None:
            heap = self._heaps[task.spec.handler] = []
        heapq.heappush(heap, (-task.spec.priority, self._seq, task))
        self._live += 1

    def discard(self, task: Task) -> None:
        """Forget a queued task (cancelled, failed): its entry is skipped later."""
        if task.state == TaskState.QUEUED and task.ready_seq:
            task.ready_seq = 0
            self._live -= 1

    def pop_for(self, handlers: Iterable[str]) -> Task | None:
        """Remove and return the best ready task whose handler is in ``handlers``."""
        best: list[_Entry] | None = None
        for name in handlers:
            heap = self._heaps.get(name)
            if not heap:
                continue
            self._drop_stale(heap)
            if heap and (best is None or heap[0] < best[0]):
                best = heap
        if best is None:
            return None
        task = heapq.heappop(best)[2]
        task.ready_seq = 0
        self._live -= 1
        return task

    def handlers_waiting(self) -> list[str]:
        """Handlers with at least one live queued task."""
        out = []
        for name, heap in self._heaps.items():
            self._drop_stale(heap)
            if heap:
                out.append(name)
        return out

    def drain_handler(self, name: str) -> list[Task]:
        """Remove and return every live queued task of one handler."""
        heap = self._heaps.pop(name, [])
        tasks = [t for _, seq, t in heap if t.ready_seq == seq and t.state == TaskState.QUEUED]
        for t in tasks:
            t.ready_seq = 0
        self._live -= len(tasks)
        return tasks

    @staticmethod
    def _drop_stale(heap: list[_Entry]) -> None:
        while heap:
            _, seq, task = heap[0]
            if task.ready_seq == seq and task.state == TaskState.QUEUED:
                return
            heapq.heappop(heap)
