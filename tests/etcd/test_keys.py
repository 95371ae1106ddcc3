"""The key layout: one place, one prefix, ids that parse back."""

from __future__ import annotations

import pytest

from deerflow_common.etcd import DEFAULT_PREFIX, Keys


def test_every_key_sits_under_the_configured_prefix() -> None:
    keys = Keys("/cluster-a/")
    built = [
        keys.agent("a1"),
        keys.controller("c1"),
        keys.election_candidate(0x1F),
        keys.journal_job("j1"),
        keys.journal_result("j1", "t1"),
        keys.journal_expiry("j1"),
    ]
    assert built == [
        "/cluster-a/agents/a1",
        "/cluster-a/controllers/c1",
        "/cluster-a/election/leader/1f",
        "/cluster-a/journal/jobs/j1",
        "/cluster-a/journal/results/j1/t1",
        "/cluster-a/journal/expiry/j1",
    ]
    assert all(key.startswith(keys.prefix) for key in built)
    assert keys.election_candidate(0x1F).startswith(keys.election_prefix)
    assert keys.journal_result("j1", "t1").startswith(keys.journal_job_results_prefix("j1"))
    assert keys.journal_job("j1").startswith(keys.journal_prefix)


def test_the_default_prefix_is_deerflow() -> None:
    assert Keys().prefix == DEFAULT_PREFIX == "/deerflow/"
    assert Keys().agent("a") == "/deerflow/agents/a"


@pytest.mark.parametrize("bad", ["", "a/b", "/", "a b", "tab\there", "nul\x00"])
def test_ids_that_are_not_one_key_segment_are_refused(bad: str) -> None:
    keys = Keys()
    for build in (keys.agent, keys.controller, keys.journal_job):
        with pytest.raises(ValueError):
            build(bad)
    with pytest.raises(ValueError):
        keys.journal_result("job", bad)


def test_keys_parse_back_into_their_ids() -> None:
    keys = Keys()
    assert keys.agent_id(keys.agent("agent-7")) == "agent-7"
    assert keys.controller_id(keys.controller("c2")) == "c2"
    assert keys.journal_job_id(keys.journal_job("job.1")) == "job.1"
    assert keys.journal_expiry_job_id(keys.journal_expiry("job.1")) == "job.1"
    assert keys.journal_result_ids(keys.journal_result("job.1", "t:3")) == ("job.1", "t:3")
    with pytest.raises(ValueError):
        keys.agent_id(keys.controller("c2"))
    with pytest.raises(ValueError):
        keys.agent_id(keys.agents_prefix + "a/b")


@pytest.mark.parametrize("bad", ["deerflow/", "/deerflow", "/", "", "/a//b/"])
def test_a_prefix_must_be_an_absolute_folder(bad: str) -> None:
    with pytest.raises(ValueError):
        Keys(bad)


def test_a_candidate_key_needs_a_real_lease() -> None:
    with pytest.raises(ValueError):
        Keys().election_candidate(0)
