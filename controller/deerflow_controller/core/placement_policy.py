"""Placement glue of the core (issue #4): predicting each task's duration (the predictor),
which agent runs a task (the balancer, by predicted finish time and learned speed), the
agents' predicted backlogs, moving unstarted attempts off lagging agents, and feeding measured
run times to the predictor."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence

from deerflow_common import signals
from deerflow_controller.core.balancer import Balancer, BalancerConfig
from deerflow_controller.core.model import AgentView, AttemptKey, HandlerTraits, Task, TaskState
from deerflow_controller.core.port import CorePort
from deerflow_controller.core.predictor import (
    Features,
    HandlerDefaults,
    Predictor,
    PredictorConfig,
    features,
)
from deerflow_controller.core.types import AttemptResult


def _join_order(agent: AgentView) -> int:
    return agent.seq


class Placement:
    """The predictor and the balancer as the core uses them (installed with
    ``SchedulerCore.use_placement``), talking to the core through its
    :class:`~deerflow_controller.core.port.CorePort`. Owns both (the decomposer reads the same
    predictor), the fastest-speed cache and the prediction accuracy."""

    __slots__ = (
        "_core",
        "_fastest_speed",
        "_placement_min_s",
        "accuracy",
        "agent_left",
        "attempt_ended",
        "attempt_started",
        "balancer",
        "lpt_max_advance_s",
        "predictor",
    )

    def __init__(
        self, core: CorePort, predictor: PredictorConfig, balancer: BalancerConfig
    ) -> None:
        self._core = core
        self._placement_min_s = core.config.placement_min_s
        self.predictor = Predictor(predictor)
        self.balancer = Balancer(balancer)
        self.lpt_max_advance_s = balancer.lpt_max_advance_s
        """Most seconds a long predicted duration moves a task ahead in the ready queue."""
        # The balancer's ledger methods themselves: the core calls them once per attempt.
        self.attempt_started: Callable[[str, AttemptKey, float], None] = self.balancer.started
        self.attempt_ended: Callable[[str, AttemptKey, float], None] = self.balancer.ended
        self.agent_left: Callable[[str], None] = self.balancer.agent_left
        self._fastest_speed: dict[str, tuple[float, float]] = {}
        """Per handler: (valid until, the fastest agent's speed), for placement's fast path."""
        self.accuracy: dict[str, deque[float]] = {}
        """Per handler, absolute percentage errors of recent predictions (for MdAPE)."""

    def predict(self, task: Task) -> float:
        """Predict ``task``'s duration from its payload's features (kept on the task for
        :meth:`learn`) and its handler's history; sets and returns ``task.predicted_s``."""
        spec = task.spec
        traits = self._core.traits.get(spec.handler)
        feats = features(spec.payload, traits.items_field if traits is not None else "")
        task.features = feats
        pred = task.predicted_s = self.predictor.duration(
            spec.handler, feats, hint_s=spec.est_duration_s
        )
        return pred

    def assigned(self, task: Task, agent: AgentView) -> None:
        """A predicted task went to ``agent``: its predicted run there (by the agent's learned
        speed), counted in the agent's predicted backlog unless too short to place."""
        speed = self.predictor.handler_speed(task.spec.handler, agent.id) or 1.0
        task.predicted_run_s = task.predicted_s / speed
        if task.predicted_s >= self._placement_min_s:
            # Tasks too short to place are left out of the agents' predicted backlogs.
            self.balancer.assigned(agent.id, task.key, task.predicted_run_s)

    def declare(self, traits: Mapping[str, HandlerTraits]) -> None:
        """Give the predictor the defaults an agent declared for its handlers."""
        for name, t in traits.items():
            self.predictor.declare(
                name,
                HandlerDefaults(
                    duration_s=t.default_duration_s,
                    cpu_s=t.default_cpu_s,
                    memory_bytes=t.default_memory_bytes,
                    items_field=t.items_field,
                    cpu_bound=t.kind == "cpu",
                ),
            )

    def place(self, task: Task, agents: Sequence[AgentView], now: float) -> AgentView | None:
        """The agent to run ``task`` among ``agents`` (the puller first); None: keep it
        queued."""
        handler = task.spec.handler
        predictor = self.predictor
        traits = self._core.traits.get(handler)
        cpu_bound = traits is not None and traits.kind == "cpu"
        puller = agents[0]
        if len(puller.in_flight) < puller.slots and self._among_fastest(puller, handler, now):
            # It can start the task now and nobody runs it much faster: no search needed
            # (the common case under load; the balancer's search costs a few us per task).
            cfg = self.balancer.config
            if puller.memory_percent < cfg.memory_ceiling_percent and (
                not cpu_bound or puller.cpu_percent < cfg.cpu_ceiling_percent
            ):
                return puller
        choice = self.balancer.choose(
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
        predictor = self.predictor
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
        balancer = self.balancer
        if not balancer.prefetching:
            return
        ledgers = balancer.ledgers
        # Only an agent whose every slot runs something makes prefetched attempts wait; on any
        # other, an unstarted attempt is merely in transit and starts at once. Only agents
        # holding both running and unstarted attempts can be such (the balancer keeps them),
        # and only agents with credit can take one: neither walk is over every agent.
        lagging = [
            a
            for a in map(core.agents.get, balancer.prefetching)
            if a is not None and len(ledgers[a.id].running) >= a.slots
        ]
        if not lagging:
            return
        lagging.sort(key=_join_order)  # proposals tie in the order agents joined
        predictor = self.predictor
        for idle in list(core.credit_index.order):
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
                core.take_back(source, p.key, now)
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
        self.predictor.observe(
            handler,
            agent_id,
            feats,
            result.run_s,
            result.cpu_s,
            result.rss_bytes,
            tokens or 0.0,
            now,
        )
