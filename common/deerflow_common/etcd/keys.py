"""Every etcd key layout of deerflow-parallel, in one place.

All keys live under one configurable prefix (default ``/deerflow/``), so several clusters can
share an etcd and a test can use a fresh prefix of its own. Nothing else in the code base builds
a key by hand: it asks a ``Keys``.

Layout under the prefix::

    agents/<agent_id>                   an agent's record (JSON), attached to the agent's lease
    controllers/<controller_id>         a controller's record (JSON), attached to its lease
    election/leader/<lease_id hex>      one candidate per controller session; the one with the
                                        lowest create revision leads, and that revision is the
                                        epoch
    journal/jobs/<job_id>               an accepted job, journaled before the submit is acked
    journal/results/<job_id>/<task_id>  a task's final result, until the client has it
    journal/results/<job_id>/<chunk>    final results of one job, group-committed together
                                        (chunk = <epoch hex>-<sequence hex>, unique per leader)
    journal/expiry/<job_id>             a finished job's expiry (wall-clock seconds, ASCII):
                                        every leader deletes the job's entries then, so the
                                        deadline outlives the leader that set it

Ids are single path segments: non-empty, no ``/``, no whitespace or control characters, so
every key parses back into its ids without ambiguity.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "/deerflow/"
"""Where the keys of a cluster live when nothing else is configured."""

_AGENTS = "agents/"
_CONTROLLERS = "controllers/"
_ELECTION = "election/leader/"
_JOURNAL = "journal/"
_JOURNAL_JOBS = "journal/jobs/"
_JOURNAL_RESULTS = "journal/results/"
_JOURNAL_EXPIRY = "journal/expiry/"


def validate_id(kind: str, value: str) -> str:
    """Return ``value`` if it can be one key segment; raise ``ValueError`` saying why not."""
    if not value:
        raise ValueError(f"{kind} must not be empty")
    if "/" in value:
        raise ValueError(f"{kind} {value!r} must not contain '/': it is one etcd key segment")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(f"{kind} {value!r} must not contain whitespace or control characters")
    return value


@dataclass(frozen=True, slots=True)
class Keys:
    """The key layout under one prefix. Cheap to build; share one per process."""

    prefix: str = DEFAULT_PREFIX
    """Absolute and ending in ``/`` (``/deerflow/``), so prefixes of two clusters never overlap
    as strings (``/a/`` is not a prefix of ``/ab/``)."""

    def __post_init__(self) -> None:
        if not (self.prefix.startswith("/") and self.prefix.endswith("/")) or self.prefix == "/":
            raise ValueError(
                f"etcd key prefix {self.prefix!r} must start and end with '/' and name a folder, "
                "for example '/deerflow/'"
            )
        if "//" in self.prefix:
            raise ValueError(f"etcd key prefix {self.prefix!r} must not contain '//'")

    # -- membership -------------------------------------------------------------------------

    @property
    def agents_prefix(self) -> str:
        return self.prefix + _AGENTS

    def agent(self, agent_id: str) -> str:
        return self.agents_prefix + validate_id("agent id", agent_id)

    def agent_id(self, key: str) -> str:
        """The agent id in an ``agents/<id>`` key; ``ValueError`` for any other key."""
        return self._segment(key, self.agents_prefix, "agent id")

    @property
    def controllers_prefix(self) -> str:
        return self.prefix + _CONTROLLERS

    def controller(self, controller_id: str) -> str:
        return self.controllers_prefix + validate_id("controller id", controller_id)

    def controller_id(self, key: str) -> str:
        return self._segment(key, self.controllers_prefix, "controller id")

    # -- election ---------------------------------------------------------------------------

    @property
    def election_prefix(self) -> str:
        """Candidates campaign under this prefix; the lowest create revision leads."""
        return self.prefix + _ELECTION

    def election_candidate(self, lease_id: int) -> str:
        """A session's candidate key: one per lease, as etcd's own election names them."""
        if lease_id <= 0:
            raise ValueError(f"lease id must be positive, got {lease_id}")
        return f"{self.election_prefix}{lease_id:x}"

    # -- journal ----------------------------------------------------------------------------

    @property
    def journal_prefix(self) -> str:
        return self.prefix + _JOURNAL

    @property
    def journal_jobs_prefix(self) -> str:
        return self.prefix + _JOURNAL_JOBS

    def journal_job(self, job_id: str) -> str:
        return self.journal_jobs_prefix + validate_id("job id", job_id)

    def journal_job_id(self, key: str) -> str:
        return self._segment(key, self.journal_jobs_prefix, "job id")

    @property
    def journal_results_prefix(self) -> str:
        return self.prefix + _JOURNAL_RESULTS

    def journal_job_results_prefix(self, job_id: str) -> str:
        """All results of one job, for reading them back or deleting them in one range."""
        return self.journal_results_prefix + validate_id("job id", job_id) + "/"

    def journal_result(self, job_id: str, task_id: str) -> str:
        return self.journal_job_results_prefix(job_id) + validate_id("task id", task_id)

    def journal_results_chunk(self, job_id: str, epoch: int, seq: int) -> str:
        """One group commit's final results of one job. Epoch-qualified, so chunks written by
        successive leaders never collide."""
        return self.journal_job_results_prefix(job_id) + f"{epoch:x}-{seq:x}"

    @property
    def journal_expiry_prefix(self) -> str:
        return self.prefix + _JOURNAL_EXPIRY

    def journal_expiry(self, job_id: str) -> str:
        """When a finished job's journal entries go (see ``ha.journal``)."""
        return self.journal_expiry_prefix + validate_id("job id", job_id)

    def journal_expiry_job_id(self, key: str) -> str:
        return self._segment(key, self.journal_expiry_prefix, "job id")

    def journal_result_ids(self, key: str) -> tuple[str, str]:
        """``(job_id, task_id)`` of a ``journal/results/<job>/<task>`` key."""
        rest = self._strip(key, self.journal_results_prefix)
        job_id, sep, task_id = rest.partition("/")
        if not sep:
            raise ValueError(f"{key!r} is not a journal result key")
        return validate_id("job id", job_id), validate_id("task id", task_id)

    # -- parsing ----------------------------------------------------------------------------

    def _strip(self, key: str, prefix: str) -> str:
        if not key.startswith(prefix):
            raise ValueError(f"{key!r} is not under {prefix!r}")
        return key[len(prefix) :]

    def _segment(self, key: str, prefix: str, kind: str) -> str:
        return validate_id(kind, self._strip(key, prefix))
