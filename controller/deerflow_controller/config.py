"""Controller configuration: frozen dataclasses, each field documented with its default and why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from deerflow_controller.cache import CacheConfig
from deerflow_controller.core.balancer import BalancerConfig
from deerflow_controller.core.predictor import PredictorConfig
from deerflow_controller.decomposer import DecomposerConfig
from deerflow_controller.ratelimit import LimiterConfig
from deerflow_controller.recovery import RecoveryConfig
from deerflow_controller.tuning import TunerConfig


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Policy knobs of the pure scheduling core."""

    default_timeout_s: float = 300.0
    """Start-to-close timeout of an attempt when the task sets none. Always set, as in Temporal:
    a handler that hangs must not hold a slot for ever. Five minutes covers DeerFlow's slow LLM
    turns; sub-agents should set their own (up to 1,800 s)."""

    default_max_retries: int = 3
    """Extra attempts after the first when the task says -1. Three absorbs transient provider
    errors without turning one bad task into a storm."""

    max_retries: int = 100
    """Upper bound a task may ask for."""

    prefetch: int = 2
    """Least number of attempts an agent may hold beyond its slots, so a finishing slot starts
    the next task without a round trip."""

    slot_limit: int = 0
    """Most attempts the controller runs on one agent at once (beyond them, the prefetch),
    whatever slots the agent declared (``--agent-slot-limit``); 0: what each declared. The
    tuner's ``agent_slots`` knob starts here and changes it at run time."""

    prefetch_fraction: float = 0.125
    """An agent's prefetch grows with its slots (an eighth of them, at least ``prefetch``): a
    64-slot agent finishing a 50 ms task every 0.8 ms empties a prefetch of 2 within one round
    trip. Still small next to the slots, so a slow agent does not hoard work."""

    prefetch_cover_s: float = 0.05
    """Beyond that floor, an agent's prefetch covers this many seconds of its measured completion
    rate (Little's law: the attempts it finishes while a result travels to the controller and
    the next assignment comes back), at most its slots. Short tasks at a high rate get a deep
    prefetch (a 64-slot agent finishing 1,280 50-ms tasks a second: its 64 slots' worth); long
    tasks keep the floor (one finishing every 10 ms: 5), so placement and stealing stay free to
    choose. 0 turns it off."""

    timeout_grace_s: float = 5.0
    """Added to the start-to-close timeout before the controller gives up on an agent that has not
    reported the attempt's end (the agent enforces the timeout itself first)."""

    agent_silence_s: float = 15.0
    """An agent that sends nothing (heartbeats come every second) for this many seconds after
    its last message is declared dead and its stream closed, even if TCP keeps it open (a
    SIGSTOPped or hung process): within a few milliseconds of the limit, not on a coarser
    cadence (``--agent-silence-timeout``). Long enough to ride out a CPU-starved agent or a GC
    pause; must exceed the heartbeat interval."""

    unknown_handler_grace_s: float = 2.0
    """After agents join or leave, how long a task whose handler no agent offers waits before it
    fails with UNKNOWN_HANDLER. Lets a cluster finish starting before tasks are judged."""

    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    """Error classes, retry budgets and delays per class, circuit breakers, agent quarantine."""

    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    decomposer: DecomposerConfig = field(default_factory=DecomposerConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)

    placement_min_s: float = 0.005
    """Tasks predicted shorter than this skip the balancer's placement and stealing (they go
    round-robin to agents with credit): choosing costs more than it could gain."""

    tenant_weights: Mapping[str, float] = field(default_factory=dict)
    """Each tenant's share of a handler's queue within a priority (``--tenant-weight
    TENANT=W``); tenants not listed weigh 1. The ready queue serves the tenants waiting at one
    priority by weighted deficit round robin, so a tenant that submits 16 tasks cannot hold back
    another's 4: with weights 3 and 1 they get three tasks and one in turn. Finite and
    positive."""

    steal: bool = True
    """Move attempts prefetched to a lagging agent, not yet started, to an idle one."""

    job_retention_s: float = 600.0
    """How long a finished job stays queryable and watchable, for clients that re-attach."""

    max_retained_output_bytes: int = 32 << 20
    """Largest output the controller keeps for dependents that asked for it (``inputs``), 32
    MiB (``--max-retained-output-bytes``): an output over it fails its task RESOURCE_EXHAUSTED
    (outputs no dependent reads are not bounded here). As large as an agent's own output limit,
    so it bites only when lowered; results this large belong in storage, passed by reference."""

    max_retained_job_bytes: int = 256 << 20
    """Most bytes of outputs one job may have kept for its dependents at once, 256 MiB
    (``--max-retained-job-bytes``): the output that would go over it fails its task
    RESOURCE_EXHAUSTED. An output stops counting when the last dependent that asked for it
    ends, so a pipeline of any length fits if its live fan-in does."""

    max_queued_tasks: int = 500_000
    """Most unfinished tasks (not yet SUCCEEDED, FAILED, CANCELLED or TIMED_OUT) the controller
    holds in all (``--max-queued-tasks``); a job that would go over is refused whole,
    RESOURCE_EXHAUSTED, retry when some finish. Each costs about 1.5 KB plus its payload
    (measured), so 500,000 hold about 750 MB plus payloads."""

    max_queued_tasks_per_tenant: int = 100_000
    """Most unfinished tasks of one tenant (``--max-queued-tasks-per-tenant``), so that one
    tenant cannot take the whole of ``max_queued_tasks``."""

    max_jobs_per_tenant: int = 10_000
    """Most unfinished jobs of one tenant (``--max-jobs-per-tenant``); a job counts against
    its first task's tenant."""

    max_output_bytes: int = 512 << 20
    """Most bytes of SUCCEEDED outputs the controller keeps for clients, 512 MiB
    (``--max-output-bytes``): over it, finished jobs are forgotten early (the longest
    finished first), and when running jobs alone hold it the output that would go over fails
    its task RESOURCE_EXHAUSTED (``core.outputs``)."""


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """The controller daemon: its listening address, limits and the core's policy."""

    host: str = "127.0.0.1"
    """Loopback by default: exposing the control plane is a deliberate choice."""

    port: int = 7400
    """gRPC port; 0 picks a free one (printed on the ready line)."""

    controller_id: str = ""
    """Defaults to host:port."""

    max_payload_bytes: int = 1 << 20
    """Largest task payload accepted (1 MiB): payloads are data, large blobs belong elsewhere."""

    max_tasks_per_job: int = 100_000

    max_watch_streams: int = 1024
    """Most result streams open at once (``--max-watch-streams``): a WatchJob, a Session stream
    and each job streaming on one count one each; one more is RESOURCE_EXHAUSTED. Each costs
    at most its share of ``watch_buffer_bytes`` (16 KiB at least) plus an HTTP/2 window when
    its reader reads nothing (``service/streams.py``)."""

    max_watch_streams_per_client: int = 256
    """Most result streams open at once from one client host, or one tenant with tokens
    (``--max-watch-streams-per-client``), so that one client cannot take them all."""

    watch_buffer_bytes: int = 16 << 20
    """Bytes of events all WatchJob streams may have in messages being written at once
    (``--watch-buffer-bytes``, 16 MiB), shared among the open streams: each message carries
    its share (16 KiB to 4 MiB), so an unread stream holds no more."""

    max_message_bytes: int = 64 << 20
    """gRPC message limit; must exceed the largest job a client submits in one message."""

    inline_input_bytes: int = 256 << 10
    """Largest dependency output sent inside an Assignment (``--inline-input-bytes``, 256
    KiB); larger ones go by reference and the agent fetches them in chunks (docs/INPUTS.md).
    An AssignmentBatch also carries at most an eighth of ``max_message_bytes`` inline."""

    heartbeat_interval_s: float = 1.0
    """How often agents send load; told to them in Welcome."""

    epoch: int = 1
    """Embedded mode has a single, fixed epoch; the etcd election supplies it otherwise."""

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    cache: CacheConfig | None = field(default_factory=CacheConfig)
    """The result cache (opt-in per handler: only handlers declared cacheable use it);
    None turns it off for every task (``--no-cache``)."""

    cache_file: str = ""
    """SQLite file that keeps the cache across restarts (``--cache-file``); empty: memory only,
    the default (and always so in the embedded demo)."""

    tuner: TunerConfig = field(default_factory=TunerConfig)
    """The AutoPerformanceTuner (``--tuner``, ``--tuner-objective``, ``--tuner-interval-s``):
    observe by default, so it only suggests."""

    limits: LimiterConfig = field(default_factory=LimiterConfig)
    """Rate limits per key pattern (``--limits FILE``); unknown keys adapt from a
    conservative start."""
