"""``deerflow-controller``: run the controller daemon."""

from __future__ import annotations

# Before anything imports grpc, which reads its experiments once on import.
from deerflow_common.grpc_endpoints import use_classic_endpoints

use_classic_endpoints()

import math
import sys
from dataclasses import replace
from pathlib import Path

import click

from deerflow_common import run, setup_logging
from deerflow_common.cli_types import FiniteFloatRange
from deerflow_common.config_file import config_option
from deerflow_common.etcd import DEFAULT_PREFIX, Keys, parse_endpoint
from deerflow_common.gc_tuning import tune_gc_for_daemon
from deerflow_common.tls import SERVER_FLAGS, TlsError, TlsFiles, load
from deerflow_controller.config import ControllerConfig, SchedulerConfig
from deerflow_controller.core.validation import quote
from deerflow_controller.ha import HaConfig
from deerflow_controller.ratelimit import LimiterConfig
from deerflow_controller.service.credentials import AuthFileError, Credentials
from deerflow_controller.service.embedded import LocalAgents
from deerflow_controller.tuning import Mode, Objective, TunerConfig


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=7400,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="gRPC port; 0 picks a free one (printed on the ready line).",
)
@click.option(
    "--local-agents",
    default=0,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Start this many agent processes here (embedded mode, no etcd).",
)
@click.option(
    "--agent-slots",
    default=16,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Slots of each local agent.",
)
@click.option(
    "--agent-arg",
    multiple=True,
    help="Extra argument passed to each local agent (repeatable), e.g. --agent-arg=--handler=m:f.",
)
@click.option(
    "--max-payload-bytes",
    default=1 << 20,
    show_default=True,
    type=click.IntRange(1),
    help="Largest task payload accepted.",
)
@click.option(
    "--max-retained-output-bytes",
    default=SchedulerConfig.__dataclass_fields__["max_retained_output_bytes"].default,
    show_default=True,
    type=click.IntRange(0, 1 << 40),
    help="Largest task output kept for dependents that read it (inputs); a larger one fails its "
    "task RESOURCE_EXHAUSTED.",
)
@click.option(
    "--max-retained-job-bytes",
    default=SchedulerConfig.__dataclass_fields__["max_retained_job_bytes"].default,
    show_default=True,
    type=click.IntRange(0, 1 << 40),
    help="Most bytes of outputs one job may have kept for its dependents at once; the output "
    "that would go over fails its task RESOURCE_EXHAUSTED.",
)
@click.option(
    "--inline-input-bytes",
    default=ControllerConfig.__dataclass_fields__["inline_input_bytes"].default,
    show_default=True,
    type=click.IntRange(0, 16 << 20),
    help="Largest dependency output sent inside an assignment; larger ones the agent fetches "
    "from the controller in chunks.",
)
@click.option(
    "--max-output-bytes",
    default=SchedulerConfig.__dataclass_fields__["max_output_bytes"].default,
    show_default=True,
    type=click.IntRange(1 << 20, 1 << 40),
    help="Most bytes of task outputs kept for clients; over it finished jobs are forgotten "
    "early, oldest first, then an output that still does not fit fails its task.",
)
@click.option(
    "--job-retention-s",
    default=SchedulerConfig.__dataclass_fields__["job_retention_s"].default,
    show_default=True,
    type=FiniteFloatRange(1.0, 7 * 24 * 3600.0),
    help="How long a finished job (its events and outputs) is kept for clients to read, in "
    "seconds; then it is forgotten and reads of it are NOT_FOUND. Shorter keeps less memory "
    "(docs/SCALING.md).",
)
@click.option(
    "--max-queued-tasks",
    default=SchedulerConfig.__dataclass_fields__["max_queued_tasks"].default,
    show_default=True,
    type=click.IntRange(1, 1 << 40),
    help="Most unfinished tasks the controller holds; a job that would go over is refused "
    "RESOURCE_EXHAUSTED (retry when some finish).",
)
@click.option(
    "--max-queued-tasks-per-tenant",
    default=SchedulerConfig.__dataclass_fields__["max_queued_tasks_per_tenant"].default,
    show_default=True,
    type=click.IntRange(1, 1 << 40),
    help="Most unfinished tasks of one tenant.",
)
@click.option(
    "--max-jobs-per-tenant",
    default=SchedulerConfig.__dataclass_fields__["max_jobs_per_tenant"].default,
    show_default=True,
    type=click.IntRange(1, 1 << 40),
    help="Most unfinished jobs of one tenant (a job counts against its first task's tenant).",
)
@click.option(
    "--max-watch-streams",
    default=ControllerConfig.__dataclass_fields__["max_watch_streams"].default,
    show_default=True,
    type=click.IntRange(1, 1 << 20),
    help="Most result streams open at once (a WatchJob, a Session stream and each of its "
    "jobs count one each); one more is RESOURCE_EXHAUSTED.",
)
@click.option(
    "--max-watch-streams-per-client",
    default=ControllerConfig.__dataclass_fields__["max_watch_streams_per_client"].default,
    show_default=True,
    type=click.IntRange(1, 1 << 20),
    help="Most result streams open at once from one client host (or, with tokens, one "
    "tenant), counted as --max-watch-streams counts them.",
)
@click.option(
    "--watch-buffer-bytes",
    default=ControllerConfig.__dataclass_fields__["watch_buffer_bytes"].default,
    show_default=True,
    type=click.IntRange(1 << 20, 1 << 40),
    help="Bytes of events all WatchJob streams may have in messages being written at once, "
    "shared among them: what unread streams can hold.",
)
@click.option(
    "--default-timeout",
    default=300.0,
    show_default=True,
    type=FiniteFloatRange(min=0.001, max=7 * 86_400),
    help="Start-to-close timeout (s) for tasks that set none.",
)
@click.option(
    "--default-retries",
    default=3,
    show_default=True,
    type=click.IntRange(0, 100),
    help="Retries for tasks that set none.",
)
@click.option(
    "--prefetch",
    default=2,
    show_default=True,
    type=click.IntRange(0, 1024),
    help="Least attempts an agent may hold beyond its slots (an eighth of its slots if more).",
)
@click.option(
    "--agent-slot-limit",
    default=0,
    show_default=True,
    type=click.IntRange(0, 4096),
    help="Most attempts the controller runs on one agent at once, whatever slots it declared "
    "(0: as declared). The tuner's agent_slots knob starts here.",
)
@click.option(
    "--tuner",
    "tuner_mode",
    default=Mode.OBSERVE.value,
    show_default=True,
    type=click.Choice([m.value for m in Mode]),
    help="The AutoPerformanceTuner: off; observe (suggests changes, makes none); on (changes "
    "agent slots, prefetch and rate-key ceilings one at a time, keeping what helps).",
)
@click.option(
    "--tuner-objective",
    default=Objective.THROUGHPUT.value,
    show_default=True,
    type=click.Choice([o.value for o in Objective]),
    help="What the tuner maximises: throughput (tasks/s), latency (lowest p95) or cost (fewest "
    "attempts per success).",
)
@click.option(
    "--tuner-interval-s",
    default=TunerConfig.__dataclass_fields__["interval_s"].default,
    show_default=True,
    type=FiniteFloatRange(min=0.1, max=3600),
    help="How often the tuner measures and decides (s); also its cool-down between changes.",
)
@click.option(
    "--tenant-weight",
    "tenant_weights",
    multiple=True,
    metavar="TENANT=W",
    help="A tenant's share of each handler's queue within a priority (repeatable); tenants "
    "not named weigh 1.",
)
@click.option(
    "--agent-silence-timeout",
    default=SchedulerConfig.__dataclass_fields__["agent_silence_s"].default,
    show_default=True,
    type=FiniteFloatRange(min=0, min_open=True, max=86_400),
    help="An agent that sends nothing (not even its heartbeat) for this many seconds is declared "
    "dead: its stream is closed and its attempts run elsewhere.",
)
@click.option(
    "--limits",
    "limits_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML file of rate limits per key pattern ([[ratelimit.keys]] pattern/rpm/tpm/...).",
)
@click.option(
    "--http-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Port of the dashboard, /metrics, /healthz and /readyz; 0 turns HTTP off "
    "[default: 7401, skipped with a warning when taken].",
)
@click.option(
    "--http-host",
    default=None,
    help="Address the HTTP side listens on [default: --host].",
)
@click.option(
    "--etcd",
    "etcd",
    default=None,
    envvar="DEERFLOW_ETCD",
    help="etcd endpoints host:port[,host:port...]: campaign for leadership, journal accepted "
    "jobs, restore on failover (env DEERFLOW_ETCD). Without it: embedded mode, state in memory.",
)
@click.option(
    "--etcd-prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    help="Key prefix of this cluster in etcd.",
)
@click.option(
    "--lease-ttl",
    default=HaConfig.__dataclass_fields__["lease_ttl_s"].default,
    show_default=True,
    type=click.IntRange(1, 60),
    help="Controller lease TTL (s): a dead leader is replaced about this long after it died.",
)
@click.option(
    "--reconnect-grace",
    default=HaConfig.__dataclass_fields__["reconnect_grace_s"].default,
    show_default=True,
    type=FiniteFloatRange(0, 600),
    help="After a takeover, how long to wait for known agents to reconnect before their work "
    "runs elsewhere (ends early once they are back).",
)
@click.option(
    "--journal-max-payload-bytes",
    default=HaConfig.__dataclass_fields__["journal_max_payload_bytes"].default,
    show_default=True,
    type=click.IntRange(1024),
    help="Largest journal record (a job as submitted); larger jobs are refused. Keep below "
    "etcd's --max-request-bytes (1.5 MiB by default).",
)
@click.option(
    "--advertise",
    default="",
    help="Address agents and clients are told to reach this controller at [default: the "
    "listening host:port; required with --etcd when --host is 0.0.0.0 or ::].",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Turn the result cache off for every task (it is opt-in per handler anyway).",
)
@click.option(
    "--cache-file",
    default="",
    help="SQLite file that keeps the result cache across restarts [default: memory only].",
)
@click.option(
    "--auth-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="DEERFLOW_AUTH_FILE",
    help="TOML file of token digests: agents' join tokens, clients' tokens with their tenant "
    "and role (see docs/SECURITY.md; `deerflow token new`). Re-read when it changes or on "
    "SIGHUP (env DEERFLOW_AUTH_FILE).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Listen on an address other than loopback without --auth-file: anyone who can "
    "connect can join as an agent and read every job.",
)
@click.option(
    "--log-level",
    default=None,
    help="DEBUG, INFO, WARNING... (default $DEERFLOW_LOG_LEVEL or INFO).",
)
# -- TLS (docs/SECURITY.md, "TLS and mutual TLS") --
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="DEERFLOW_CONTROLLER_TLS_CERT",
    help="PEM certificate chain: serve gRPC and HTTP over TLS (with --tls-key); re-read when "
    "the file changes (env DEERFLOW_CONTROLLER_TLS_CERT). Without it: plaintext.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="DEERFLOW_CONTROLLER_TLS_KEY",
    help="PEM private key of --tls-cert (env DEERFLOW_CONTROLLER_TLS_KEY).",
)
@click.option(
    "--tls-client-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="DEERFLOW_CONTROLLER_TLS_CLIENT_CA",
    help="PEM CA certificates: require every agent and client (gRPC and HTTP) to present a "
    "certificate this CA signed; mutual TLS (env DEERFLOW_CONTROLLER_TLS_CLIENT_CA).",
)
@config_option
def main(
    host: str,
    port: int,
    local_agents: int,
    agent_slots: int,
    agent_arg: tuple[str, ...],
    max_payload_bytes: int,
    max_retained_output_bytes: int,
    max_retained_job_bytes: int,
    inline_input_bytes: int,
    max_output_bytes: int,
    job_retention_s: float,
    max_queued_tasks: int,
    max_queued_tasks_per_tenant: int,
    max_jobs_per_tenant: int,
    max_watch_streams: int,
    max_watch_streams_per_client: int,
    watch_buffer_bytes: int,
    default_timeout: float,
    default_retries: int,
    prefetch: int,
    agent_slot_limit: int,
    tuner_mode: str,
    tuner_objective: str,
    tuner_interval_s: float,
    tenant_weights: tuple[str, ...],
    agent_silence_timeout: float,
    limits_path: Path | None,
    http_port: int | None,
    http_host: str | None,
    etcd: str | None,
    etcd_prefix: str,
    lease_ttl: int,
    reconnect_grace: float,
    journal_max_payload_bytes: int,
    advertise: str,
    no_cache: bool,
    cache_file: str,
    auth_file: Path | None,
    insecure: bool,
    log_level: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
) -> None:
    """Run the deerflow-parallel controller."""
    setup_logging("deerflow-controller", log_level)
    # Embedded mode: the local agents import themselves while this process imports the server
    # (below: most of its start-up), then wait to be told where it listens; they end quietly
    # if it exits first (a bad flag below).
    prestarted = LocalAgents(local_agents) if local_agents else None
    from deerflow_controller.cache import CacheConfig
    from deerflow_controller.service.server import ListenError, serve

    tls = _tls(tls_cert, tls_key, tls_client_ca)
    heartbeat_s = ControllerConfig().heartbeat_interval_s
    if agent_silence_timeout <= heartbeat_s:
        raise click.BadParameter(
            f"{agent_silence_timeout:g} s would declare healthy agents dead: make it longer than "
            f"their heartbeat interval ({heartbeat_s:g} s), ideally several times longer",
            param_hint="--agent-silence-timeout",
        )
    try:
        limits = LimiterConfig.from_toml(limits_path) if limits_path else LimiterConfig()
    except (ValueError, OSError) as e:
        raise click.BadParameter(str(e), param_hint="--limits") from None
    config = ControllerConfig(
        cache=None if no_cache else CacheConfig(),
        cache_file=cache_file,
        limits=limits,
        host=host,
        port=port,
        max_payload_bytes=max_payload_bytes,
        inline_input_bytes=inline_input_bytes,
        max_watch_streams=max_watch_streams,
        max_watch_streams_per_client=max_watch_streams_per_client,
        watch_buffer_bytes=watch_buffer_bytes,
        tuner=TunerConfig(
            mode=Mode(tuner_mode),
            objective=Objective(tuner_objective),
            interval_s=tuner_interval_s,
            cooldown_s=tuner_interval_s,
        ),
        scheduler=replace(
            SchedulerConfig(),
            default_timeout_s=default_timeout,
            default_max_retries=default_retries,
            prefetch=prefetch,
            slot_limit=agent_slot_limit,
            tenant_weights=_tenant_weights(tenant_weights),
            agent_silence_s=agent_silence_timeout,
            max_retained_output_bytes=max_retained_output_bytes,
            max_retained_job_bytes=max_retained_job_bytes,
            max_output_bytes=max_output_bytes,
            job_retention_s=job_retention_s,
            max_queued_tasks=max_queued_tasks,
            max_queued_tasks_per_tenant=max_queued_tasks_per_tenant,
            max_jobs_per_tenant=max_jobs_per_tenant,
        ),
    )
    ha = None
    if etcd:
        if _unreachable(advertise or host):
            raise click.BadParameter(
                f"{quote(advertise or host)} is no address agents and clients can reach, yet it "
                "is what this controller would publish in etcd: give --advertise HOST:PORT, "
                "this host's address (--host 0.0.0.0 listens on all of them)",
                param_hint="--advertise",
            )
        endpoints = tuple(e.strip() for e in etcd.split(",") if e.strip())
        try:
            Keys(etcd_prefix)
            for endpoint in endpoints:
                parse_endpoint(endpoint)
            ha = HaConfig(
                endpoints=endpoints,
                prefix=etcd_prefix,
                lease_ttl_s=lease_ttl,
                reconnect_grace_s=reconnect_grace,
                journal_max_payload_bytes=journal_max_payload_bytes,
                advertise=advertise,
            )
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--etcd/--etcd-prefix") from None
    try:
        credentials = Credentials(auth_file) if auth_file is not None else None
    except AuthFileError as e:
        click.echo(f"deerflow-controller: {e}", err=True)
        sys.exit(2)
    args = ["--slots", str(agent_slots), *agent_arg]
    tune_gc_for_daemon()
    try:
        run(
            serve(
                config,
                local_agents=local_agents,
                agent_args=args,
                http_port=http_port,
                http_host=http_host,
                ha=ha,
                credentials=credentials,
                insecure=insecure,
                tls=tls,
                prestarted=prestarted,
            )
        )
    except ListenError as e:
        click.echo(f"deerflow-controller: {e}", err=True)
        sys.exit(1)


def _unreachable(address: str) -> bool:
    """An address listening on every interface (0.0.0.0, ::), which no one can connect to."""
    host = address.rpartition(":")[0] if address.count(":") == 1 else address
    if host.startswith("[") and "]" in host:
        host = host[1 : host.index("]")]
    return host.strip() in ("", "0.0.0.0", "::")


def _tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> TlsFiles | None:
    """The TLS files, checked now (readable PEM, the key matching the certificate): a bad one
    is a usage error naming its flag, not a failed handshake later."""
    files = TlsFiles(cert, key, client_ca)
    if not files.given:
        return None
    try:
        load(files, SERVER_FLAGS, server=True)
    except TlsError as e:
        raise click.UsageError(str(e)) from None
    return files


def _tenant_weights(pairs: tuple[str, ...]) -> dict[str, float]:
    """``TENANT=W`` pairs as a dict; a malformed pair or a weight that is not a finite positive
    number is a usage error naming it."""
    weights: dict[str, float] = {}
    for pair in pairs:
        tenant, sep, raw = pair.rpartition("=")
        try:
            weight = float(raw)
        except ValueError:
            weight = math.nan
        if not sep or not (math.isfinite(weight) and weight > 0):
            raise click.BadParameter(
                f"{pair!r} is not TENANT=WEIGHT with a positive weight, e.g. team-a=3",
                param_hint="--tenant-weight",
            )
        weights[tenant] = weight
    return weights


if __name__ == "__main__":
    main()
