"""Placement glue of the core (issue #4): which agent runs a task (the balancer, by predicted
finish time and learned speed), moving unstarted attempts off lagging agents, and feeding
measured run times to the predictor."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from deerflow_common import signals
from deerflow_controller.core.balancer import Balancer
from deerflow_controller.core.model import AgentView, Task, TaskState
from deerflow_controller.core.port import CorePort
from deerflow_controller.core.predictor import Features, Predictor
from deerflow_controller.core.types import AttemptResult


class Placement:
    """The balancer and the predictor as the core uses them (installed with
    ``SchedulerCore.use_placement``). Owns the fastest-speed cache and the prediction accuracy;
    the predictor and balancer are the core's (it orders and accounts with them too); talks to
    the core through its :class:`~deerflow_controller.core.port.CorePort`."""

    __slots__ = ("_balancer", "_core", "_fastest_speed", "_predictor", "accuracy")

    def __init__(self, core: CorePort, predictor: Predictor, balancer: Balancer) -> None:
        self._core = core
        self._predictor = predictor
        self._balancer = balancer
        self._fastest_speed: dict[str, tuple[float, float]] = {}
        """Per handler: (valid until, the fastest agent's speed), for placement's fast path."""
        self.accuracy: dict[str, deque[float]] = {}
        """Per handler, absolute percentage errors of recent predictions (for MdAPE)."""

    def place(self, task: Task, agents: Sequence[AgentView], now: float) -> AgentView | None:
        """The agent to run ``task`` among ``agents`` (the puller first); None: keep it
        queued."""
        handler = task.spec.handler
        predictor = self._predictor
        traits = self._core.traits.get(handler)
        cpu_bound = traits is not None and traits.kind == "cpu"
        puller = agents[0]
        if len(puller.in_flight) < puller.slots and self._among_fastest(puller, handler, now):
            # It can start the task now and nobody runs it much faster: no search needed
            # (the common case under load; the balancer's search costs a few us per task).
            cfg = self._balancer.config
            if puller.memory_percent < cfg.memory_ceiling_percent and (
                not cpu_bound or puller.cpu_percent < cfg.cpu_ceiling_percent
            ):
                return puller
        choice = self._balancer.choose(
            handler,
            task.spec.labels,
            task.predicted_s,
            agents,
            lambda agent_id: predictor.handler_speed(handler, agent_id),
            now,
            cpu_bound=cpu_bound,
        )
        return choice.agent

    def _among_fastest(self, agent: AgentView, handler: str, now: float) -> bool:
        """Whether ``agent`` runs ``handler`` at least 90 % as fast as the fastest agent with it
        (the fastest speed is looked up at most every half second)."""
        predictor = self._predictor
        cached = self._fastest_speed.get(handler)
        if cached is None or now >= cached[0]:
            speeds = [
                predictor.handler_speed(handler, a.id)
                for a in self._core.agents.values()
                if handler in a.handlers
            ]
            cached = self._fastest_speed[handler] = (now + 0.5, max(speeds, default=1.0))
        return predictor.handler_speed(handler, agent.id) >= 0.9 * cached[1]

    def steal(self, now: float) -> None:
        """Idle agents (free slots, nothing queued they can run) take attempts that wait
        unstarted in a lagging agent's prefetch, when the balancer predicts a gain."""
        core = self._core
        balancer = self._balancer
        agents = list(core.agents.values())
        ledgers = balancer.ledgers
        # Only an agent whose every slot runs something makes prefetched attempts wait; on any
        # other, an unstarted attempt is merely in transit and starts at once.
        lagging = [a for a in agents if a.id in ledgers and len(ledgers[a.id].running) >= a.slots]
        if not lagging:
            return
        predictor = self._predictor
        outbox = core.outbox()
        for idle in agents:
            if len(idle.in_flight) >= idle.slots or idle.draining:
                continue
            proposals = balancer.propose_steals(idle, lagging, predictor.agent_speed, now)
            for p in proposals:
                task = core.task_for(p.key)
                source = core.agents.get(p.from_agent)
                if (
                    task is None
                    or source is None
                    or task.state != TaskState.DISPATCHED
                    or task.attempt != p.key[2]
                    or task.agent_id != p.from_agent
                    or idle.credit <= 0
                ):
                    continue
                outbox.cancels.setdefault(p.from_agent, []).append(p.key)
                source.release(p.key)
                balancer.ended(p.from_agent, p.key, now)
                core.counters.stolen += 1
                detail = (
                    f"moved from {p.from_agent} (predicted {p.gain_s:.2f} s sooner): "
                    f"{p.reason.value}"
                )
                # The moved attempt never started, so its request was never sent: it keeps
                # its rate admission (its keys are not charged again).
                core.assign(task, idle, now, detail=detail)

    def learn(self, task: Task, agent_id: str, result: AttemptResult, now: float) -> None:
        """Feed a successful attempt's measured cost to the predictor; track its accuracy."""
        feats = task.features
        if not isinstance(feats, Features):
            return
        metadata = result.metadata
        tokens = signals.number(metadata, signals.TOTAL_TOKENS) if metadata else None
        handler = task.spec.handler
        if task.predicted_run_s > 0:
            errors = self.accuracy.get(handler)
            if errors is None:
                errors = self.accuracy[handler] = deque(maxlen=2048)
            errors.append(abs(task.predicted_run_s - result.run_s) / result.run_s)
        self._predictor.observe(
            handler,
            agent_id,
            feats,
            result.run_s,
            result.cpu_s,
            result.rss_bytes,
            tokens or 0.0,
            now,
        )
