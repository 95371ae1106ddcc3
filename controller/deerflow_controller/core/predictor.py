"""Online estimates of what an attempt will cost: duration, CPU, memory and tokens.

Pure and deterministic: no clock is read and nothing blocks. The scheduling core feeds it one
:meth:`Predictor.observe` per finished attempt and asks :meth:`Predictor.predict` per task; the
decomposer, the balancer and the timeouts read the answers.

The model, per handler:

- **Duration** is log-normal. ``log(run_s)`` is regressed on payload features (log item count
  when the handler declares ``items_field``, log payload size) over a bounded window of recent
  attempts, refit with numpy least squares every ``refit_every`` observations. The fitted
  coefficients and the residual spread are cached as floats, so a prediction is a few float
  operations and at most two ``math.log`` calls: no numpy on the hot path.
- **Cold start**: a handler's declared ``default_duration_s`` (per item when it has items) acts
  as ``prior_weight`` pseudo-observations of an exponentially weighted log mean, which real
  observations overwhelm after a few attempts; the regression takes over once
  ``fit_min_samples`` attempts are in its window. Before any observation the submitter's hint
  (``est_duration_s``) wins over the declaration; with neither, ``fallback_duration_s``.
- **Agent speed**: every observation's ratio ``predicted / observed`` (against the pooled
  handler model, before that observation updates it) goes into a window per agent and per
  (handler, agent). Their medians are raw speeds; :meth:`Predictor.agent_speed` is the raw speed
  relative to the fastest agent with enough samples, so a half-speed agent reads about 0.5 and
  the fastest 1.0. Medians resist the heavy tails of real latencies.
- **CPU** is the handler's decayed CPU share (sum of cpu_s / sum of run_s) times the predicted
  duration, so it scales with items; ``io_fraction`` is one minus that share.
- **Memory** and **tokens** are exponentially weighted log means (medians of a log-normal).

Units: seconds, bytes, tokens. ``now`` is the core's clock in seconds.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Estimate",
    "Features",
    "HandlerDefaults",
    "ItemCost",
    "Predictor",
    "PredictorConfig",
    "features",
]

_Z90 = 1.2815515655446004
"""Standard normal 90th percentile: p90 of a log-normal is exp(mu + Z90 * sigma)."""


class Features(NamedTuple):
    """What the predictor knows of a payload without running it."""

    items: int
    """Length of the handler's ``items_field`` list; 0 when it declares none or it is absent."""
    size: int
    """Payload length in bytes."""


_BY_SIZE: dict[int, Features] = {}
"""Item-less features by payload size, shared: every queued task keeps its features, and a
tuple each was one more object per task for the garbage collector to visit (most of a job's
payloads are a few sizes)."""
_BY_SIZE_MAX = 4096


def features(payload: bytes, items_field: str = "") -> Features:
    """Extract features; parses JSON only when the handler declares ``items_field``.

    A payload that is not a JSON object, or whose field is not a list, counts 0 items rather
    than failing: prediction must never reject a task (the decomposer reports bad payloads)."""
    if not items_field or not payload or payload[:1] != b"{":
        size = len(payload)
        shared = _BY_SIZE.get(size)
        if shared is None:
            shared = Features(0, size)
            if len(_BY_SIZE) < _BY_SIZE_MAX:
                _BY_SIZE[size] = shared
        return shared
    try:
        value = json.loads(payload).get(items_field)
    except (ValueError, UnicodeDecodeError):
        return Features(0, len(payload))
    return Features(len(value) if isinstance(value, list) else 0, len(payload))


@dataclass(frozen=True, slots=True)
class HandlerDefaults:
    """What a handler declares about itself (agent.proto ``HandlerInfo``); 0 = not declared."""

    duration_s: float = 0.0
    """One attempt's median duration; per item when ``items_field`` is set."""
    cpu_s: float = 0.0
    """CPU seconds of one attempt (per item when ``items_field`` is set)."""
    memory_bytes: int = 0
    tokens: float = 0.0
    items_field: str = ""
    cpu_bound: bool = False
    """``kind == cpu``: the io_fraction prior before CPU times are observed."""


@dataclass(frozen=True, slots=True)
class PredictorConfig:
    """Knobs of the predictor; defaults chosen for DeerFlow's log-normal latencies."""

    window: int = 256
    """Attempts per handler the regression and the weighted means remember. Bounds memory and
    lets the model follow a provider whose latency drifts within a few hundred calls."""
    refit_every: int = 32
    """Observations between least-squares refits (one refit costs ~50 us; amortised ~1.5 us)."""
    fit_min_samples: int = 16
    """Attempts in the window before the regression replaces the weighted mean."""
    prior_weight: float = 3.0
    """Pseudo-observations a declared default is worth: wrong defaults fade within a few tasks."""
    prior_sigma: float = 0.6
    """Log-spread assumed before data: DeerFlow's tool latencies have sigma 0.5-0.7."""
    ridge: float = 1.0
    """Ridge penalty on the centred slopes: keeps a feature that barely varies from producing
    wild coefficients in a small window."""
    fallback_duration_s: float = 1.0
    """Duration of a handler nobody has declared or measured (and the task gives no hint)."""
    speed_window: int = 128
    """Ratios per agent (and per handler on an agent) in the speed medians. With latencies of
    log-spread 0.5, the median of 128 is within about 7 % of the true speed."""
    speed_min_samples: int = 5
    """Ratios before an agent's (or a handler-on-agent's) median is trusted."""
    max_learn_rate_per_s: float = 500.0
    """Observations per second per handler that update a warm model (one with a full window);
    the rest are counted and dropped. At 500/s the window still renews twice a second, and a
    controller finishing 10k no-op tasks a second pays ~0.3 us for most results, not ~12 us."""
    learn_burst: float = 128.0
    """Observations a warm handler may learn at once: one batch of results from an agent
    shares one ``now``, and should not be thinned to its first result."""
    speed_after_samples: int = 8
    """Pooled observations of a handler before its ratios count toward speeds: ratios against
    a cold default would blame every agent for a wrong declaration."""


class Estimate(NamedTuple):
    """One attempt's predicted cost. With ``agent_id`` it is for that agent; without, for the
    reference (fastest) agent, so ``duration_s / agent_speed(a)`` is the time on agent ``a``."""

    duration_s: float
    """Median duration."""
    p90_s: float
    """90th percentile duration (for timeouts, with a margin of the caller's choosing)."""
    cpu_s: float
    memory_bytes: float
    tokens: float
    samples: int
    """Observations behind the estimate (0 = declared default, hint or fallback only)."""
    sigma: float
    """Log-spread of duration: the confidence (0.25 tight, 1.0 loose)."""


class ItemCost(NamedTuple):
    """Linear cost of a handler with items: duration ~ overhead_s + per_item_s * items."""

    per_item_s: float
    overhead_s: float
    samples: int


class _LogMean:
    """Exponentially weighted mean and variance of log values; weight 1/n up to the window,
    then constant, so early data is averaged and later data decays. O(1), floats only."""

    __slots__ = ("cap", "mean", "var", "weight")

    def __init__(self, cap: int, prior: float | None, prior_weight: float, prior_var: float):
        self.cap = float(cap)
        self.mean = prior if prior is not None else 0.0
        self.var = prior_var
        self.weight = prior_weight if prior is not None else 0.0

    def add(self, x: float) -> None:
        self.weight = min(self.weight + 1.0, self.cap)
        a = 1.0 / self.weight
        d = x - self.mean
        self.mean += a * d
        self.var = (1.0 - a) * (self.var + a * d * d)


class _Ratios:
    """A window of log speed ratios and its median, recomputed lazily."""

    __slots__ = ("_dirty", "median", "n", "values")

    def __init__(self, window: int) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self.n = 0
        self.median = 0.0
        self._dirty = 0

    def add(self, log_ratio: float) -> bool:
        """Record one ratio; True when the median was recomputed."""
        self.values.append(log_ratio)
        self.n += 1
        self._dirty += 1
        # Sorting 128 floats costs ~4 us: every time while young, then every 8th observation.
        if self.n <= 32 or self._dirty >= 8:
            s = sorted(self.values)
            k = len(s)
            self.median = s[k // 2] if k % 2 else 0.5 * (s[k // 2 - 1] + s[k // 2])
            self._dirty = 0
            return True
        return False


class _HandlerModel:
    """Everything learned about one handler. Coefficients are plain floats for predict()."""

    def __init__(self, defaults: HandlerDefaults, cfg: PredictorConfig) -> None:
        import numpy as np

        self.defaults = defaults
        self.use_items = bool(defaults.items_field)
        has_prior = defaults.duration_s > 0
        prior = math.log(defaults.duration_s) if has_prior else None
        # Before a fit: log duration per item (items handlers) or per attempt.
        self.per_attempt = _LogMean(cfg.window, prior, cfg.prior_weight, cfg.prior_sigma**2)
        self.samples = 0
        self.declared = has_prior
        # Cached prediction coefficients: mu = b0 + b_items*log(items) + b_size*log(size).
        self.b0 = prior if prior is not None else math.log(cfg.fallback_duration_s)
        self.b_items = 1.0 if self.use_items else 0.0
        self.b_size = 0.0
        self.sigma = cfg.prior_sigma
        self.fitted = False
        # Ring of recent (log items, log size, log run_s, items, run_s) for refits. A numpy row
        # write costs ~0.8 us; a Python list is cheaper to write but ~80 us to convert per refit.
        self.buf = np.zeros((cfg.window, 5))
        self.buf_n = 0
        self.since_fit = 0
        # CPU share: decayed sums of cpu_s and run_s.
        self.cpu_sum = 0.0
        self.run_sum = 0.0
        if defaults.cpu_s > 0 and defaults.duration_s > 0:
            self.cpu_sum = defaults.cpu_s * cfg.prior_weight
            self.run_sum = defaults.duration_s * cfg.prior_weight
        elif defaults.cpu_bound:
            self.cpu_sum = self.run_sum = cfg.prior_weight
        mem_prior = math.log(defaults.memory_bytes) if defaults.memory_bytes > 0 else None
        tok_prior = math.log(defaults.tokens) if defaults.tokens > 0 else None
        self.memory = _LogMean(cfg.window, mem_prior, cfg.prior_weight, 0.0)
        self.tokens = _LogMean(cfg.window, tok_prior, cfg.prior_weight, 0.0)
        self.memory_median = defaults.memory_bytes or 0.0
        self.tokens_median = defaults.tokens or 0.0
        self.agents: dict[str, _Ratios] = {}
        self.item_cost = ItemCost(defaults.duration_s, 0.0, 0)
        self.budget = cfg.learn_burst
        self.budget_at = -math.inf
        self.thinned = 0
        """Observations dropped by the learning budget."""

    def mu(self, f: Features) -> float:
        mu = self.b0
        if self.b_items and f.items > 1:
            mu += self.b_items * math.log(f.items)
        if self.b_size and f.size > 1:
            mu += self.b_size * math.log(f.size)
        return mu


class Predictor:
    """Learns per-handler and per-agent costs from finished attempts; see the module docstring.

    Not thread-safe; owned by the scheduling core. Memory is bounded by handlers x window plus
    agents x speed_window floats."""

    def __init__(self, config: PredictorConfig | None = None) -> None:
        # numpy is loaded here, with the scheduler's predictor at start-up (not with this
        # module, which the command line imports for PredictorConfig, before it spawns the
        # local agents), so the first agent's handlers never wait for it.
        import numpy  # noqa: F401

        self.config = config or PredictorConfig()
        self._models: dict[str, _HandlerModel] = {}
        self._agents: dict[str, _Ratios] = {}
        self._raw_speed: dict[str, float] = {}
        """exp(median log ratio) per agent with enough samples."""
        self._ref = 1.0
        """Raw speed of the fastest trusted agent: the gauge of agent_speed and Estimate."""

    # ---------------------------------------------------------------- declarations

    def declare(self, handler: str, defaults: HandlerDefaults) -> None:
        """Record a handler's declared defaults (from an agent's Hello). Redeclaring a handler
        already observed keeps what was learned; only a cold handler takes the new defaults."""
        model = self._models.get(handler)
        if model is None or model.samples == 0:
            self._models[handler] = _HandlerModel(defaults, self.config)

    def _model(self, handler: str) -> _HandlerModel:
        model = self._models.get(handler)
        if model is None:
            model = self._models[handler] = _HandlerModel(HandlerDefaults(), self.config)
        return model

    # ---------------------------------------------------------------- hot path

    def predict(
        self, handler: str, features: Features, agent_id: str | None = None, hint_s: float = 0.0
    ) -> Estimate:
        """Predict one attempt. O(1): a dict lookup or two and a few float operations.

        ``hint_s`` is the submitter's ``est_duration_s`` (0 = none). It knows this task better
        than the handler's declared default does, so it wins until the handler has been
        observed; after that the learned model wins."""
        model = self._models.get(handler)
        if model is None or (model.samples == 0 and (hint_s > 0 or not model.declared)):
            # No data: every agent is assumed to be the reference.
            median = self._prior_duration(model, features, hint_s)
            sigma = self.config.prior_sigma
            samples = 0
            cpu_share = 1.0 if model is not None and model.defaults.cpu_bound else 0.0
            memory = tokens = 0.0
        else:
            mu = model.mu(features)
            sigma = model.sigma
            samples = model.samples
            cpu_share = model.cpu_sum / model.run_sum if model.run_sum > 0 else 0.0
            memory, tokens = model.memory_median, model.tokens_median
            scale = 1.0 / self._ref
            if agent_id is not None:
                ratios = model.agents.get(agent_id)
                if ratios is not None and ratios.n >= self.config.speed_min_samples:
                    scale = math.exp(-ratios.median)
                else:
                    scale = 1.0 / self._raw_speed.get(agent_id, 1.0)
            median = math.exp(mu) * scale
        return Estimate(
            median,
            median * math.exp(_Z90 * sigma),
            median * cpu_share,
            memory,
            tokens,
            samples,
            sigma,
        )

    def duration(self, handler: str, features: Features, hint_s: float = 0.0) -> float:
        """``predict(handler, features, hint_s=hint_s).duration_s`` alone, without the rest of
        the estimate: what the core asks for every task it queues."""
        model = self._models.get(handler)
        if model is None or (model.samples == 0 and (hint_s > 0 or not model.declared)):
            return self._prior_duration(model, features, hint_s)
        return math.exp(model.mu(features)) * (1.0 / self._ref)

    def _prior_duration(
        self, model: _HandlerModel | None, features: Features, hint_s: float
    ) -> float:
        """The median before the handler is observed: the submitter's hint, else the
        fallback (times the items when the handler counts them)."""
        base = hint_s if hint_s > 0 else self.config.fallback_duration_s
        if model is not None and model.use_items and features.items > 1 and hint_s <= 0:
            base *= features.items
        return base

    def observe(
        self,
        handler: str,
        agent_id: str,
        features: Features,
        run_s: float,
        cpu_s: float,
        rss_bytes: int,
        tokens: float,
        now: float,
    ) -> None:
        """Learn from one finished attempt (successful ones: a failure's run time says little
        about the work). Values <= 0 are unknown and skipped. O(1) amortised: a refit every
        ``refit_every`` calls costs one small least-squares solve. A warm handler learns at most
        ``max_learn_rate_per_s`` observations a second (by ``now``); the rest are dropped."""
        if run_s <= 0:
            return
        cfg = self.config
        model = self._model(handler)
        if model.samples >= cfg.window:
            budget = model.budget + (now - model.budget_at) * cfg.max_learn_rate_per_s
            model.budget_at = now
            if budget < 1.0:
                model.budget = budget if budget > 0.0 else 0.0
                model.thinned += 1
                return
            model.budget = (budget if budget < cfg.learn_burst else cfg.learn_burst) - 1.0
        log_run = math.log(run_s)
        if model.samples >= cfg.speed_after_samples:
            # Ratio against the pooled model before it learns from this attempt.
            self._note_ratio(model, agent_id, model.mu(features) - log_run)
        model.samples += 1
        items = features.items if model.use_items else 0
        log_items = math.log(items) if items > 1 else 0.0
        model.per_attempt.add(log_run - log_items)
        row = (
            log_items,
            math.log(features.size) if features.size > 1 else 0.0,
            log_run,
            float(max(items, 1)),
            run_s,
        )
        model.buf[model.buf_n % cfg.window] = row
        model.buf_n += 1
        model.since_fit += 1
        decay = 1.0 - 1.0 / cfg.window
        model.cpu_sum = model.cpu_sum * decay + max(cpu_s, 0.0)
        model.run_sum = model.run_sum * decay + run_s
        if rss_bytes > 0:
            model.memory.add(math.log(rss_bytes))
            model.memory_median = math.exp(model.memory.mean)
        if tokens > 0:
            model.tokens.add(math.log(tokens))
            model.tokens_median = math.exp(model.tokens.mean)
        n = min(model.buf_n, cfg.window)
        if n >= cfg.fit_min_samples and (not model.fitted or model.since_fit >= cfg.refit_every):
            self._refit(model, n)
        elif not model.fitted:
            model.b0 = model.per_attempt.mean
            # A handful of samples understates the spread: keep a shrinking share of the prior.
            prior = cfg.prior_sigma**2 * cfg.prior_weight / (model.samples + cfg.prior_weight)
            model.sigma = math.sqrt(max(model.per_attempt.var, prior))

    def _note_ratio(self, model: _HandlerModel, agent_id: str, log_ratio: float) -> None:
        pair = model.agents.get(agent_id)
        if pair is None:
            pair = model.agents[agent_id] = _Ratios(self.config.speed_window)
        pair.add(log_ratio)
        ratios = self._agents.get(agent_id)
        if ratios is None:
            ratios = self._agents[agent_id] = _Ratios(self.config.speed_window)
        if ratios.add(log_ratio) and ratios.n >= self.config.speed_min_samples:
            self._raw_speed[agent_id] = math.exp(ratios.median)
            self._ref = max(self._raw_speed.values())

    def _refit(self, model: _HandlerModel, n: int) -> None:
        """Ridge least squares of log duration on centred features; cache floats."""
        import numpy as np

        data = model.buf[:n]
        cols = [0, 1] if model.use_items else [1]
        x = data[:, cols]
        y = data[:, 2]
        x_mean = x.mean(axis=0)
        y_mean = float(y.mean())
        xc = x - x_mean
        k = len(cols)
        a = np.vstack([xc, math.sqrt(self.config.ridge) * np.eye(k)])
        b = np.concatenate([y - y_mean, np.zeros(k)])
        coef = np.linalg.lstsq(a, b, rcond=None)[0]
        resid = (y - y_mean) - xc @ coef
        dof = max(n - k - 1, 1)
        model.sigma = max(math.sqrt(float(resid @ resid) / dof), 1e-3)
        if model.use_items:
            model.b_items, model.b_size = float(coef[0]), float(coef[1])
        else:
            model.b_items, model.b_size = 0.0, float(coef[0])
        model.b0 = y_mean - float(x_mean @ coef)
        model.fitted = True
        model.since_fit = 0
        if model.use_items:
            model.item_cost = _linear_item_cost(data[:, 3], data[:, 4], n)

    # ---------------------------------------------------------------- derived views

    def agent_speed(self, agent_id: str) -> float:
        """Speed relative to the fastest agent with enough samples (1.0 = as fast; 0.5 = takes
        twice as long). An agent without enough samples is assumed typical of the pool."""
        return self._raw_speed.get(agent_id, 1.0) / self._ref

    def handler_speed(self, handler: str, agent_id: str) -> float:
        """Like :meth:`agent_speed` for one handler on one agent, when it has enough samples
        (an agent may be slow at CPU work and fine at IO)."""
        model = self._models.get(handler)
        pair = model.agents.get(agent_id) if model is not None else None
        if pair is None or pair.n < self.config.speed_min_samples:
            return self.agent_speed(agent_id)
        return math.exp(pair.median) / self._ref

    def io_fraction(self, handler: str) -> float:
        """Share of wall time not spent on CPU (1.0 = pure IO). Unknown handlers count as IO,
        DeerFlow's common case."""
        model = self._models.get(handler)
        if model is None or model.run_sum <= 0:
            return 0.0 if model is not None and model.defaults.cpu_bound else 1.0
        return min(1.0, max(0.0, 1.0 - model.cpu_sum / model.run_sum))

    def item_cost(self, handler: str) -> ItemCost:
        """Per-item cost and per-attempt overhead on the reference agent, for the decomposer's
        chunk size. From a linear fit once enough items attempts are seen; before that the
        declared per-item default (or the current model at one item) and no overhead."""
        model = self._models.get(handler)
        if model is None:
            return ItemCost(self.config.fallback_duration_s, 0.0, 0)
        if model.item_cost.samples:
            c = model.item_cost
            return ItemCost(c.per_item_s / self._ref, c.overhead_s / self._ref, c.samples)
        return ItemCost(math.exp(model.b0) / self._ref, 0.0, 0)

    def samples(self, handler: str) -> int:
        model = self._models.get(handler)
        return model.samples if model is not None else 0

    def forget_agent(self, agent_id: str) -> None:
        """Drop an agent's speed (it left for good, or was replaced by a new machine)."""
        self._agents.pop(agent_id, None)
        if self._raw_speed.pop(agent_id, None) is not None:
            self._ref = max(self._raw_speed.values(), default=1.0)
        for model in self._models.values():
            model.agents.pop(agent_id, None)


def _linear_item_cost(items: np.ndarray, run_s: np.ndarray, n: int) -> ItemCost:
    """Least squares run_s = overhead + per_item * items, clipped to non-negative."""
    import numpy as np

    if n < 2 or float(np.ptp(items)) == 0.0:
        return ItemCost(_median(run_s / items), 0.0, n)
    a = np.column_stack([np.ones(n), items])
    coef = np.linalg.lstsq(a, run_s, rcond=None)[0]
    overhead, per = float(coef[0]), float(coef[1])
    if per <= 0:
        return ItemCost(_median(run_s / items), 0.0, n)
    return ItemCost(per, max(overhead, 0.0), n)


def _median(values: np.ndarray) -> float:
    """The median of a non-empty 1-D array. Not ``np.median``: its first call imports
    ``numpy.ma`` (0.05-0.2 s of CPU on the controller's event loop when the first task ends)."""
    import numpy as np

    n = len(values)
    k = n // 2
    if n % 2:
        return float(np.partition(values, k)[k])
    low, high = np.partition(values, (k - 1, k))[k - 1 : k + 1]
    return float((low + high) / 2)
