"""Invariants of the scheduling core, checked against a recount of its task table.

The core keeps counts beside its structures for speed (the ready queue's length, each rate key's
waiting tasks and held slots, each agent's unfinished attempts and capped handlers, the job and
cluster counters). Every check here recounts from the tasks themselves and fails, naming the
task or key, where a count and the recount disagree or a task sits in two waits at once. Used
after every step of the stateful test (``test_scheduler_model.py``).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from deerflow_controller.core.inputs import wanted_inputs
from deerflow_controller.core.model import AttemptKey, Job, Task, TaskState
from deerflow_controller.core.scheduler import Scheduler

from .scheduling import assert_event_log_sound


@dataclass
class AgentHolding:
    """What one agent process really holds, as the test's fake agent knows it: the attempts it
    was sent and has not reported or given back, and those the controller asked it to stop."""

    held: dict[AttemptKey, Task] = field(default_factory=dict)
    cancel_asked: set[AttemptKey] = field(default_factory=set)


def all_tasks(jobs: Iterable[Job]) -> list[Task]:
    """Every task of ``jobs``, parts of split tasks included."""
    return [t for job in jobs for t in itertools.chain(job.tasks.values(), job.parts.values())]


def check_ready_queue(sched: Scheduler, tasks: list[Task]) -> None:
    """The ready queue's count is its membership (tasks with a live entry); every member is
    QUEUED and has exactly one live entry; nothing terminal or elsewhere is a member."""
    members = [t for t in tasks if t.ready_seq]
    for t in members:
        assert t.state == TaskState.QUEUED, f"{t.id} is in the ready queue but {t.state.name}"
    live: Counter[int] = Counter()
    for lane in sched.ready._lanes.values():
        for _, _, _, seq, task in lane.entries():
            if task.ready_seq == seq:
                live[id(task)] += 1
    for t in members:
        assert live[id(t)] == 1, f"{t.id} has {live[id(t)]} live entries in the ready queue"
    assert len(sched.ready) == len(members), (
        f"ready queue counts {len(sched.ready)}, holds {len(members)}"
    )
    assert sched.queued() == len(members)


def check_rate_limiter(sched: Scheduler, tasks: list[Task]) -> None:
    """Each gate's waiting count is its live THROTTLED entries, each waiting task has exactly one
    (in the line of the key it waits on), a task parked on a circuit is in that circuit's list,
    and each key's held slots are the tasks holding it."""
    gate_entries: Counter[int] = Counter()
    for key, gate in sched.limiter.gates.items():
        live = [
            task
            for queue in gate._queues.values()
            for _, _, token, task in queue
            if task.gate_seq == token
        ]
        for task in live:
            gate_entries[id(task)] += 1
            assert key in task.spec.rate_keys, f"{task.id} waits on {key}, not one of its keys"
            assert task.throttled_on == key, f"{task.id} waits on {key}, says {task.throttled_on}"
        assert gate.waiting == len(live), f"{key}: counts {gate.waiting} waiting, holds {len(live)}"
        holders = [t for t in tasks if t.rate_hold and any(k == key for k, _ in t.rate_hold)]
        assert gate.in_flight == len(holders), (
            f"{key}: counts {gate.in_flight} slots held, {len(holders)} tasks hold one"
        )
    parked = {k: Counter(id(t) for t in v) for k, v in sched._recovery.parked.items()}
    for t in tasks:
        if t.gate_seq:
            assert t.state == TaskState.THROTTLED and not t.parked_on, (
                f"{t.id} waits in a gate but is {t.state.name} (parked on {t.parked_on!r})"
            )
        if t.state != TaskState.THROTTLED:
            continue
        assert t.rate_hold is None, f"{t.id} is THROTTLED and holds rate slots"
        if t.parked_on:
            assert parked.get(t.parked_on, Counter())[id(t)] >= 1, f"{t.id} parked nowhere"
            assert gate_entries[id(t)] == 0, f"{t.id} is parked and waiting in a gate"
        else:
            assert t.spec.rate_keys, f"{t.id} is THROTTLED with no rate keys and no circuit"
            assert gate_entries[id(t)] == 1, f"{t.id} waits {gate_entries[id(t)]} times"
    gates = sched.limiter.gates
    for t in tasks:
        if t.terminal:
            assert t.rate_hold is None, f"{t.id} ended {t.state.name} holding rate slots"
        for key, _ in t.rate_hold or ():
            assert key in gates, f"{t.id} holds a slot of {key}, whose gate was evicted"
    for key, gate in gates.items():
        # Dispatch walks only the busy gates: one with a task waiting must be among them.
        if gate.waiting:
            assert sched.limiter._busy.get(key) is gate, f"{key} has waiters and is not busy"


def check_agents(sched: Scheduler, tasks: list[Task], holdings: Mapping[str, AgentHolding]) -> None:
    """Each connected agent's unfinished attempts are attempts it really holds, capped
    handlers are counted right, the balancer's ledger holds nothing the agent does not, and every
    live dispatched task is held by its agent. What an agent holds beyond them is only what the
    controller asked it to stop."""
    for agent_id, agent in sched.agents.items():
        holding = holdings[agent_id]
        in_flight = set(agent.in_flight)
        phantom = in_flight - set(holding.held)
        assert not phantom, f"{agent_id} counts attempts it does not hold: {sorted(phantom)}"
        unasked = set(holding.held) - in_flight - holding.cancel_asked
        assert not unasked, f"{agent_id} holds uncounted attempts: {sorted(unasked)}"
        per_handler = Counter(t.spec.handler for t in agent.in_flight.values())
        for handler in agent.handler_caps:
            counted = agent.capped_in_flight.get(handler, 0)
            assert counted == per_handler[handler], f"{agent_id}/{handler}: {counted} counted"
        ledger = sched.balancer.ledgers.get(agent_id)
        if ledger is not None:
            stale = (set(ledger.pending) | set(ledger.running)) - in_flight
            assert not stale, f"{agent_id}'s ledger keeps ended attempts {sorted(stale)}"
        assert agent.credit == max(0, agent.slots + agent.prefetch - len(in_flight)) or (
            agent.draining and agent.credit == 0
        )
    offers = Counter(h for agent in sched.agents.values() for h in agent.handlers)
    for handler, n in sched._handler_offers.items():
        assert n == offers[handler], f"{handler}: {n} agents counted offering it, {offers[handler]}"
    for ledger_id in sched.balancer.ledgers:
        ledger = sched.balancer.ledgers[ledger_id]
        if ledger_id not in sched.agents:
            assert not ledger.pending and not ledger.running, f"{ledger_id} left, ledger kept"
    for t in tasks:
        if t.terminal or t.state not in (TaskState.DISPATCHED, TaskState.RUNNING):
            continue
        if t.parent is None and t.split not in (None, False):
            continue  # a split task shows RUNNING while its parts run
        holder = sched.agents.get(t.agent_id)
        assert holder is not None, f"{t.id} is {t.state.name} on {t.agent_id!r}, not connected"
        assert t.key in holder.in_flight, f"{t.id} attempt {t.attempt} not held by {t.agent_id}"


def check_credit_index(sched: Scheduler) -> None:
    """The core's index of agents with credit (``core.credit_index``) equals its definition:
    the connected agents whose credit is above 0, in the order they joined, and the sum of
    every connected agent's credit; likewise the balancer's agents that may lag (stealing's
    index): those whose ledger holds both running and unstarted attempts."""
    index = sched.credit_index
    with_credit = [a for a in sched.agents.values() if a.credit > 0]
    assert index.order == with_credit, (
        f"index holds {[a.id for a in index.order]}, agents with credit are "
        f"{[a.id for a in with_credit]}"
    )
    total = sum(a.credit for a in sched.agents.values())
    assert index.total == total, f"index counts {index.total} credit, agents have {total}"
    assert len({a.seq for a in sched.agents.values()}) == len(sched.agents), "join seq reused"
    ledgers = sched.balancer.ledgers
    both = {agent_id for agent_id, ledger in ledgers.items() if ledger.pending and ledger.running}
    kept = sched.balancer.prefetching
    assert kept == both, f"balancer keeps {sorted(kept)} as prefetching, ledgers: {sorted(both)}"


def check_jobs(sched: Scheduler, jobs: Iterable[Job]) -> None:
    """Each job's log is sound (seq 1..n, one terminal event per finished task, its last, no
    task reported ready twice in a row); the cluster's counters equal the recount; parts of an
    ended task have ended."""
    recount: Counter[TaskState] = Counter()
    submitted = 0
    for job in jobs:
        # A forgotten job's log is cleared with it (core.terminal.forget_job).
        if sched.jobs.get(job.id) is job:
            assert_event_log_sound(job)
        else:
            assert not job.events and not any(t.output for t in job.tasks.values())
        for before, after in itertools.pairwise(job.events):
            assert before.time <= after.time, f"{job.id}: event time went back"
        last: dict[str, tuple[TaskState, str]] = {}
        for e in job.events:
            prev = last.get(e.task_id)
            if prev is not None and e.state == TaskState.QUEUED and not e.detail:
                assert prev != (TaskState.QUEUED, ""), f"{job.id}/{e.task_id} became ready twice"
            last[e.task_id] = (e.state, e.detail)
        submitted += len(job.tasks)
        for t in job.tasks.values():
            if t.terminal:
                recount[t.state] += 1
        for part in job.parts.values():
            parent = part.parent
            assert parent is not None
            if parent.terminal:
                assert part.terminal, f"{part.id} is {part.state.name}, its task ended"
    c = sched.counters
    assert c.submitted == submitted
    assert (c.succeeded, c.failed, c.cancelled, c.timed_out) == (
        recount[TaskState.SUCCEEDED],
        recount[TaskState.FAILED],
        recount[TaskState.CANCELLED],
        recount[TaskState.TIMED_OUT],
    ), f"counters {c} against {dict(recount)}"


def check_quotas(sched: Scheduler, jobs: Iterable[Job]) -> None:
    """The quotas count exactly the unfinished tasks per tenant and in all, and the unfinished
    jobs per tenant (of their first task), with no entry left for a tenant at zero."""
    tasks: Counter[str] = Counter()
    by_job: Counter[str] = Counter()
    for job in jobs:
        for t in job.tasks.values():
            if not t.terminal:
                tasks[t.spec.tenant] += 1
        if not job.done:
            by_job[next(iter(job.tasks.values())).spec.tenant] += 1
    quotas = sched.quotas
    assert quotas.tasks == sum(tasks.values())
    assert quotas.tasks_by_tenant == dict(tasks), f"{quotas.tasks_by_tenant} != {dict(tasks)}"
    assert quotas.jobs_by_tenant == dict(by_job), f"{quotas.jobs_by_tenant} != {dict(by_job)}"


def check_output_bytes(sched: Scheduler) -> None:
    """The outputs the core counts are those of its jobs' SUCCEEDED tasks; finished jobs are
    those it may forget early, in finishing order."""
    jobs = sched.jobs.values()
    per_job = {
        j.id: sum(len(t.output) for t in j.tasks.values() if t.state == TaskState.SUCCEEDED)
        for j in jobs
    }
    for job in jobs:
        assert job.output_bytes == per_job[job.id], f"{job.id}: {job.output_bytes} counted"
    outputs = sched.outputs
    assert outputs.total == sum(per_job.values())
    assert set(outputs.finished) == {j.id for j in jobs if j.done}
    assert outputs.finished_bytes == sum(per_job[j] for j in outputs.finished)
    finished_at = [j.finished_at for j in outputs.finished.values()]
    assert finished_at == sorted(finished_at), "finished jobs out of finishing order"


def check_nothing_runnable_waits(sched: Scheduler, now: float) -> None:
    """An agent with free credit leaves nothing queued that it could run, and rate-keyed tasks
    waiting while agents have room have a release timer armed (or wait for an attempt that
    holds their key to end)."""
    for agent in sched.agents.values():
        if agent.credit <= 0:
            continue
        handlers = set(agent.open_handlers()) - sched._quarantined.get(agent.id, frozenset())
        for lane in sched.ready._lanes.values():
            for _, _, _, seq, task in lane.entries():
                if task.ready_seq != seq:
                    continue
                spec = task.spec
                runnable = spec.handler in handlers and all(
                    agent.labels.get(k) == v for k, v in spec.labels.items()
                )
                assert not runnable, f"{task.id} stays queued while {agent.id} has credit"
    room = sum(a.credit for a in sched.agents.values()) - len(sched.ready)
    if room <= 0 or not sched.limiter.waiting:
        return
    nxt = sched.limiter.next_release(now)
    if nxt is None:
        # Only a finishing attempt can make room: some key of a waiting task must be held.
        assert any(g.in_flight for g in sched.limiter.gates.values()), (
            "rate-keyed tasks wait for a slot no attempt holds"
        )
        return
    armed = [when for when, _, kind, _, _ in sched._timers if kind.name == "RATE_RELEASE"]
    assert sched._rate_timer_at < math.inf and any(w >= now for w in armed), (
        f"{sched.limiter.waiting} rate-keyed tasks wait with room and no release timer"
    )


def check_retained_outputs(jobs: Iterable[Job]) -> None:
    """Issue #15: a task's consumers are its dependents that read its output and have not
    ended; its output is kept exactly while it succeeded and has one, and each job's
    retained_bytes is the sum of its kept outputs."""
    for job in jobs:
        readers: Counter[str] = Counter()
        for t in job.tasks.values():
            if not t.terminal:
                readers.update(wanted_inputs(t.spec))
        kept = 0
        for t in job.tasks.values():
            assert t.consumers == readers[t.id], (
                f"{t.id} counts {t.consumers} readers, {readers[t.id]} are live"
            )
            should = t.state == TaskState.SUCCEEDED and t.consumers > 0
            assert t.retained == should, f"{t.id} ({t.state.name}) retained={t.retained}"
            kept += len(t.output) if t.retained else 0
        assert job.retained_bytes == kept, f"job {job.id} counts {job.retained_bytes}, keeps {kept}"


def check_all(
    sched: Scheduler, jobs: Iterable[Job], holdings: Mapping[str, AgentHolding], now: float
) -> None:
    """Every invariant above, against one recount."""
    jobs = list(jobs)
    tasks = all_tasks(jobs)
    check_ready_queue(sched, tasks)
    check_rate_limiter(sched, tasks)
    check_agents(sched, tasks, holdings)
    check_credit_index(sched)
    check_jobs(sched, jobs)
    check_quotas(sched, jobs)
    check_output_bytes(sched)
    check_nothing_runnable_waits(sched, now)
    check_retained_outputs(jobs)
