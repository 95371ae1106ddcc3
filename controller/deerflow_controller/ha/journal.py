"""The leader's journal in etcd: accepted jobs and final results, group-committed.

Why: a standby that takes over must know every job the old leader acknowledged and every
result it already had, or accepted work would be lost (or run again for nothing). Writing one
etcd request per task would cost ~0.7 ms of disk sync each, so writes are *group-committed*:
whatever was queued while the previous transaction was in flight goes out as the next one (one
transaction per writer turn, split only by etcd's limits on operations and bytes).

Records (keys from ``deerflow_common.etcd.Keys``):

- ``journal/jobs/<job>``: the ``SubmitJobRequest`` as accepted (job id filled in). A submit is
  acknowledged only after the transaction carrying it committed (:meth:`Journal.append_job`).
- ``journal/results/<job>/<epoch>-<seq>``: a ``TaskEventBatch`` of that job's terminal events
  of one turn. No client is told a result before it committed (``JournalTap`` holds the job's
  watchers at it): a result lost with the leader only means the task runs again, and the one
  the next leader gets is the only one any client sees (execution is at-least-once, delivery
  once).

- ``journal/expiry/<job>``: once the job finished, when its entries go (wall-clock seconds)
  and why: ``finished`` (``job_retention_s`` after it finished), or ``delivered``
  (``delivered_retention_s`` after a client received its last result), e.g. ``1796593760.392
  delivered``. Written with or after the job's last results, never before.

:meth:`Journal.forget` deletes the job key, its results range and its expiry in one
transaction, so etcd does not grow without bound. It runs when the expiry comes (a timer of the
leader that set it) or when the scheduler forgets the job. The expiry is a record, not a timer
only, because the timer dies with its leader: a new leader reads the expiries with the journal,
deletes the jobs whose expiry passed at once, and restores the others as finished until their
expiry, which it does not restart; no task of a delivered job runs again (one whose result was
too large to journal is not restored at all). Not an etcd lease attached to the job's
keys: that would mean rewriting every result chunk of a finished job (thousands for a large
one) to attach it, and chunks written later would escape it; the record is one small put, read
by the range read a takeover does anyway. Expiries compare wall clocks of different
controllers, so clock skew shifts them by as much (seconds, against minutes of retention).

A journal belongs to one leadership term: :meth:`close` (leadership lost) fails every waiting
submit with :class:`JournalClosed` and writes nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from deerflow_common.etcd import Backoff, EtcdClient, EtcdError, EtcdUnavailable, Keys
from deerflow_protos import client_pb2, common_pb2

log = logging.getLogger(__name__)

MAX_TXN_OPS = 120
"""etcd refuses transactions of more than ``--max-txn-ops`` operations (128 by default)."""


class JournalClosed(Exception):
    """The journal's leadership term ended before the record was committed."""


class JournalRecordTooLarge(ValueError):
    """A record exceeds ``journal_max_payload_bytes``; the message says what to do."""


@dataclass(slots=True)
class _Pending:
    jobs: dict[str, tuple[bytes, asyncio.Future[None]]] = field(default_factory=dict)
    results: dict[str, list[common_pb2.TaskEvent]] = field(default_factory=dict)
    forget: set[str] = field(default_factory=set)
    expiries: dict[str, Expiry] = field(default_factory=dict)
    committed: list[Callable[[], None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.jobs or self.results or self.forget or self.expiries or self.committed)


@dataclass(slots=True)
class _Txn:
    puts: list[tuple[str, bytes]] = field(default_factory=list)
    delete_prefixes: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    acks: list[asyncio.Future[None]] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    committed: list[Callable[[], None]] = field(default_factory=list)
    size: int = 0

    @property
    def ops(self) -> int:
        return len(self.puts) + len(self.deletes) + len(self.delete_prefixes)


class Journal:
    """Group-committed writes of one leadership term (``epoch``). Start with :meth:`start`,
    end with :meth:`close`. All methods are called from the event loop."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        epoch: int,
        *,
        max_record_bytes: int,
        leader_key: str = "",
        on_fenced: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``leader_key``: this term's leader key (created at ``epoch``). Every transaction is
        fenced on it, so a deposed leader cannot write; ``on_fenced`` is called when the fence
        refuses a write (the term is over), after the journal closed itself. ``clock``: wall
        clock (seconds) that expiries are compared with."""
        self.client = client
        self.keys = keys
        self.epoch = epoch
        self.leader_key = leader_key
        self._on_fenced = on_fenced
        self.max_record_bytes = max_record_bytes
        self._pending = _Pending()
        self._committing: dict[str, asyncio.Future[None]] = {}
        self._wake = asyncio.Event()
        self._closed = False
        self._seq = 0
        self._writer: asyncio.Task[None] | None = None
        self.transactions = 0
        """Transactions committed (for benchmarks and tests)."""
        self._oversized_logged = False
        self._clock = clock
        self._expiries: dict[str, Expiry] = {}
        """Each finished job's expiry, as written (or queued) in this term."""
        self._expiry_timers: dict[str, asyncio.TimerHandle] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def close(self) -> None:
        """End the term now (synchronous): fail waiting submits, write nothing more."""
        if self._closed:
            return
        self._closed = True
        error = JournalClosed("leadership was lost before the job was journaled")
        for _, ack in self._pending.jobs.values():
            if not ack.done():
                ack.set_exception(error)
        for ack in self._committing.values():
            if not ack.done():
                ack.set_exception(error)
        self._pending = _Pending()
        for timer in self._expiry_timers.values():
            timer.cancel()
        self._expiry_timers.clear()
        if self._writer is not None:
            self._writer.cancel()

    async def wait_closed(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    # ------------------------------------------------------------------ records

    def check_job_size(self, job_id_len: int, request_bytes: int) -> None:
        """Raise :class:`JournalRecordTooLarge` for a job whose record would be too large."""
        size = request_bytes + job_id_len + 8
        if size > self.max_record_bytes:
            raise JournalRecordTooLarge(
                f"the job is {size} bytes when journaled, over the journal's limit of "
                f"{self.max_record_bytes} bytes (--journal-max-payload-bytes); split it into "
                "smaller jobs, or keep large payloads in storage and pass references"
            )

    async def append_job(self, job_id: str, record: bytes) -> None:
        """Journal an accepted job; returns once its transaction committed. Raises
        :class:`JournalClosed` when the term ends first (the submit must not be acked)."""
        if self._closed:
            raise JournalClosed("this controller no longer leads")
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.jobs[job_id] = (record, ack)
        self._wake.set()
        await asyncio.shield(ack)

    async def wait_job(self, job_id: str) -> None:
        """Wait until an already appended job is committed (a duplicate submit while the first
        one's transaction is in flight). Returns at once for committed or restored jobs."""
        pending = self._pending.jobs.get(job_id)
        ack = pending[1] if pending is not None else self._committing.get(job_id)
        if ack is not None:
            await asyncio.shield(ack)

    def add_results(
        self,
        job_id: str,
        events: Sequence[common_pb2.TaskEvent],
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        """Queue terminal events of one job for the next transaction (not awaited).
        ``on_commit`` is called once they are committed (never, if the term ends first)."""
        if self._closed or not events:
            return
        self._pending.results.setdefault(job_id, []).extend(events)
        if on_commit is not None:
            self._pending.committed.append(on_commit)
        self._wake.set()

    def expire_at(self, job_id: str, expiry: Expiry, *, recorded: bool = False) -> None:
        """Delete a finished job's entries at ``expiry.at`` (wall-clock seconds, see
        ``clock``), and journal the expiry (unless ``recorded``: read from the journal) so that
        a later leader honours it. The earlier of two expiries wins; delivered sticks."""
        if self._closed or job_id in self._pending.forget or not math.isfinite(expiry.at):
            return
        known = self._expiries.get(job_id)
        if known is not None:
            merged = Expiry(min(known.at, expiry.at), known.delivered or expiry.delivered)
            if merged == known:
                return
            expiry = merged
        self._expiries[job_id] = expiry
        if not recorded:
            self._pending.expiries[job_id] = expiry
            self._wake.set()
        old = self._expiry_timers.pop(job_id, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, expiry.at - self._clock())
        loop = asyncio.get_running_loop()
        self._expiry_timers[job_id] = loop.call_later(delay, self.forget, job_id)

    def forget(self, job_id: str) -> None:
        """Delete the job's journal entries in the next transaction."""
        if self._closed:
            return
        pending = self._pending
        pending.results.pop(job_id, None)
        pending.expiries.pop(job_id, None)
        self._expiries.pop(job_id, None)
        timer = self._expiry_timers.pop(job_id, None)
        if timer is not None:
            timer.cancel()
        queued = pending.jobs.pop(job_id, None)
        if queued is not None and not queued[1].done():
            queued[1].set_result(None)  # forgotten before it was written: nothing to wait for
        pending.forget.add(job_id)
        self._wake.set()

    # ------------------------------------------------------------------ writer

    async def _write_loop(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            pending, self._pending = self._pending, _Pending()
            if not pending:
                continue
            for txn in self._transactions(pending):
                await self._commit(txn)

    def _transactions(self, pending: _Pending) -> list[_Txn]:
        """Pack the turn's records into as few transactions as etcd's limits allow."""
        keys = self.keys
        txns = [_Txn()]
        limit = self.max_record_bytes

        def add(key: str, value: bytes | None, *, prefix: bool = False) -> _Txn:
            txn = txns[-1]
            size = len(key) + (len(value) if value is not None else 0)
            if txn.ops and (txn.ops >= MAX_TXN_OPS or txn.size + size > limit):
                txn = _Txn()
                txns.append(txn)
            txn.size += size
            if value is not None:
                txn.puts.append((key, value))
            elif prefix:
                txn.delete_prefixes.append(key)
            else:
                txn.deletes.append(key)
            return txn

        for job_id in pending.forget:
            add(keys.journal_job(job_id), None)
            add(keys.journal_job_results_prefix(job_id), None, prefix=True)
            add(keys.journal_expiry(job_id), None)
        for job_id, (record, ack) in pending.jobs.items():
            self._committing[job_id] = ack
            txn = add(keys.journal_job(job_id), record)
            txn.acks.append(ack)
            txn.job_ids.append(job_id)
        for job_id, events in pending.results.items():
            for chunk in self._chunks(events):
                self._seq += 1
                add(keys.journal_results_chunk(job_id, self.epoch, self._seq), chunk)
        # Last: an expiry commits with or after the job's results of this turn, so a restored
        # job with an expiry has all of them (those under the record limit).
        for job_id, expiry in pending.expiries.items():
            add(keys.journal_expiry(job_id), expiry.record())
        # The turn's transactions commit in order: the last one's commit is everyone's.
        txns[-1].committed.extend(pending.committed)
        return txns

    def _chunks(self, events: list[common_pb2.TaskEvent]) -> list[bytes]:
        """Serialised ``TaskEventBatch``es of at most ``max_record_bytes`` each. A single result
        larger than that is not journaled (logged once): after a failover its task runs again."""
        chunks: list[bytes] = []
        batch = common_pb2.TaskEventBatch()
        size = 0
        budget = self.max_record_bytes - 256
        for ev in events:
            n = ev.ByteSize() + 8
            if n > budget:
                if not self._oversized_logged:
                    self._oversized_logged = True
                    log.warning(
                        "a result of %d bytes is over the journal's record limit (%d bytes, "
                        "--journal-max-payload-bytes) and is not journaled: after a failover its "
                        "task runs again",
                        n,
                        self.max_record_bytes,
                    )
                continue
            if size + n > budget and batch.events:
                chunks.append(batch.SerializeToString())
                batch = common_pb2.TaskEventBatch()
                size = 0
            batch.events.append(ev)
            size += n
        if batch.events:
            chunks.append(batch.SerializeToString())
        return chunks

    async def _commit(self, txn: _Txn) -> None:
        """Write one transaction, retrying while etcd is unreachable (the term's end stops it:
        the session's loss closes the journal)."""
        backoff = Backoff(0.02, 0.5)
        while not self._closed:
            fence = (self.leader_key, self.epoch) if self.leader_key else None
            try:
                applied = await self.client.write_batch(
                    txn.puts, txn.delete_prefixes, txn.deletes, only_if_created=fence
                )
            except EtcdUnavailable as e:
                log.warning("journal write failed (%s); retrying", e)
                await asyncio.sleep(backoff.delay())
                continue
            except EtcdError as e:
                # A refused transaction (too large, say) would be refused again: fail its submits.
                log.error("etcd refused a journal transaction: %s", e)
                for ack in txn.acks:
                    if not ack.done():
                        ack.set_exception(JournalClosed(f"etcd refused the journal write: {e}"))
                # Its results are not journaled, as an oversized one is not: they go out all the
                # same rather than hold their jobs' watchers for ever.
                for committed in txn.committed:
                    committed()
                return
            if not applied:
                log.warning(
                    "the journal write of epoch %d was refused: the leader key is gone, so this "
                    "controller no longer leads",
                    self.epoch,
                )
                self.close()
                if self._on_fenced is not None:
                    self._on_fenced()
                return
            self.transactions += 1
            for ack in txn.acks:
                if not ack.done():
                    ack.set_result(None)
            for job_id in txn.job_ids:
                self._committing.pop(job_id, None)
            for committed in txn.committed:
                committed()
            return


@dataclass(frozen=True, slots=True)
class Expiry:
    """When a finished job's journal entries go, and whether a client received all of it."""

    at: float
    """Wall-clock seconds."""
    delivered: bool = False

    def record(self) -> bytes:
        return f"{self.at:.3f} {'delivered' if self.delivered else 'finished'}".encode()

    @classmethod
    def parse(cls, value: bytes) -> Expiry:
        """An expiry record; ``ValueError`` for a damaged one."""
        at, _, why = value.decode("ascii").partition(" ")
        expiry = cls(float(at), why == "delivered")
        if not math.isfinite(expiry.at) or expiry.at <= 0 or why not in ("delivered", "finished"):
            raise ValueError(f"{value!r} is not an expiry record")
        return expiry


@dataclass(slots=True)
class JournaledJob:
    request: client_pb2.SubmitJobRequest
    results: dict[str, common_pb2.TaskEvent]
    """Terminal event per task id."""
    expiry: Expiry | None = None
    """When the finished job's entries go; None while it has not finished."""

    @property
    def complete(self) -> bool:
        """Every task has its final result journaled."""
        results = self.results
        return all(task.id in results for task in self.request.tasks)


async def load_journal(client: EtcdClient, keys: Keys) -> tuple[list[JournaledJob], list[str]]:
    """Read the whole journal: the jobs with their journaled results and expiries, and the ids
    of jobs that have results or an expiry but no job record (left over by a forget that raced
    a write; the caller deletes them). Three range reads."""
    jobs_snapshot = await client.get_prefix(keys.journal_jobs_prefix)
    results_snapshot = await client.get_prefix(keys.journal_results_prefix)
    expiry_snapshot = await client.get_prefix(keys.journal_expiry_prefix)
    jobs: dict[str, JournaledJob] = {}
    for kv in jobs_snapshot.kvs:
        request = client_pb2.SubmitJobRequest()
        try:
            request.ParseFromString(kv.value)
        except Exception:  # a damaged record must not stop the takeover
            log.error("journal record %s is not a SubmitJobRequest; skipped", kv.key)
            continue
        jobs[request.job_id] = JournaledJob(request, {})
    orphans: set[str] = set()
    for kv in results_snapshot.kvs:
        try:
            job_id, _ = keys.journal_result_ids(kv.key)
        except ValueError:
            continue
        job = jobs.get(job_id)
        if job is None:
            orphans.add(job_id)
            continue
        batch = common_pb2.TaskEventBatch()
        try:
            batch.ParseFromString(kv.value)
        except Exception:
            log.error("journal record %s is not a TaskEventBatch; skipped", kv.key)
            continue
        for ev in batch.events:
            job.results.setdefault(ev.task_id, ev)
    for kv in expiry_snapshot.kvs:
        try:
            job_id = keys.journal_expiry_job_id(kv.key)
            expiry = Expiry.parse(kv.value)
        except ValueError:
            log.error("journal record %s is not an expiry; ignored", kv.key)
            continue
        job = jobs.get(job_id)
        if job is None:
            orphans.add(job_id)
        else:
            job.expiry = expiry
    return list(jobs.values()), sorted(orphans)
