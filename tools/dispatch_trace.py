"""The scheduling core's decisions under random traffic, hashed, to compare two commits.

The full ``Scheduler`` (every policy the daemon installs) on a fake clock: agents of mixed
handlers, slots, zones, speeds and handler caps join, leave and drain; jobs of 1-300 tasks of
mixed priority and labels arrive; agents report some of what they hold (5 % failing); the tuner's
knobs move. Every assignment and cancel goes into a SHA-256 per (agents, seed). Run it with one
commit's packages first on ``PYTHONPATH`` and then another's: equal lines mean the two made
identical decisions (docs/BENCHMARKS.md, "Issue #19 item 4").

    python tools/dispatch_trace.py 2,3,10,40,60,200 3
"""

from __future__ import annotations

import hashlib
import random
import sys
from dataclasses import replace

from deerflow_controller.config import SchedulerConfig
from deerflow_controller.core.model import AttemptKey, HandlerTraits, TaskSpec
from deerflow_controller.core.scheduler import AttemptResult, Scheduler


def trace(n_agents: int, seed: int) -> tuple[str, int]:
    rng = random.Random(seed)
    traits = {
        "llm": HandlerTraits(default_duration_s=0.5),
        "hash": HandlerTraits(kind="cpu", default_duration_s=0.2),
        "sleep": HandlerTraits(default_duration_s=0.01),
    }
    s = Scheduler(replace(SchedulerConfig(), agent_silence_s=1e9), seed=seed)
    h = hashlib.sha256()
    n = 0
    holding: dict[str, list[tuple[AttemptKey, str]]] = {}
    speed: dict[str, float] = {}
    now = 0.0

    def collect() -> None:
        nonlocal n
        out = s.take()
        for a, tasks in sorted(out.assignments.items()):
            for t in tasks:
                holding.setdefault(a, []).append((t.key, t.spec.handler))
                h.update(f"A {a} {t.key}\n".encode())
                n += 1
        for a, keys in sorted(out.cancels.items()):
            for k in keys:
                h.update(f"C {a} {k}\n".encode())
                holding[a] = [x for x in holding.get(a, []) if x[0] != k]

    ids = [f"ag{i}" for i in range(n_agents)]
    joined: set[str] = set()

    def join(a: str) -> None:
        hs = rng.sample(sorted(traits), rng.randint(1, 3))
        speed[a] = rng.choice([0.5, 1.0, 2.0])
        s.agent_joined(
            a,
            hs,
            rng.randint(1, 6),
            now,
            labels={"zone": rng.choice("ab")},
            handler_slots={"hash": 1} if rng.random() < 0.2 else None,
            traits=traits,
        )
        joined.add(a)
        collect()

    for a in ids[: max(1, n_agents // 2)]:
        join(a)
    for step in range(400):
        r = rng.random()
        if r < 0.15:
            specs = [
                TaskSpec(
                    id=f"t{i}",
                    handler=rng.choice(sorted(traits)),
                    payload=b"x" * rng.randint(1, 200),
                    priority=rng.choice([0, 0, 1]),
                    labels={"zone": "a"} if rng.random() < 0.1 else {},
                )
                for i in range(rng.randint(1, 300))
            ]
            s.submit(f"j{step}", "j", specs, now)
            collect()
        elif r < 0.2:
            a = rng.choice(ids)
            if a in joined and rng.random() < 0.5:
                s.agent_left(a, now)
                joined.discard(a)
                holding.pop(a, None)
                collect()
            elif a not in joined:
                join(a)
        elif r < 0.22 and joined:
            a = rng.choice(sorted(joined))
            held = holding.get(a, [])
            s.agent_draining(a, [k for k, _ in held[len(held) // 2 :]], now)
            collect()
        elif r < 0.24:
            s.set_slot_limit(rng.choice([0, 0, 2, 4]), now)
            s.set_prefetch(rng.choice([0, 1, 2]), now)
            collect()
        else:
            now += rng.choice([0.01, 0.1, 0.5])
            s.tick(now)
            collect()
            for a in sorted(holding):
                if a not in joined:
                    continue
                held = holding[a]
                if not held:
                    continue
                k = rng.randint(1, len(held))
                done, holding[a] = held[:k], held[k:]
                keys = [x[0] for x in done]
                s.started(a, keys, now)
                s.finished(
                    a,
                    [
                        AttemptResult(
                            key, ok=rng.random() > 0.05, output=b"ok", run_s=0.01 + 0.3 / speed[a]
                        )
                        for key, _ in done
                    ],
                    now,
                )
                collect()
    return h.hexdigest()[:16], n


for n_agents in map(int, sys.argv[1].split(",")):
    for seed in range(int(sys.argv[2])):
        d, n = trace(n_agents, seed)
        print(f"agents={n_agents} seed={seed} assignments={n} trace={d}")
