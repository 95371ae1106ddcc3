"""``EtcdClient.write_batch``: puts and deletes in one all-or-nothing transaction (the journal's
group commit), and the journal's results-chunk key."""

from __future__ import annotations

import pytest

from deerflow_common.etcd import EtcdClient, EtcdError, Keys


async def test_a_batch_puts_and_deletes_keys_and_prefixes_together(
    client: EtcdClient, keys: Keys
) -> None:
    await client.write_batch(
        [
            (keys.journal_job("a"), b"A"),
            (keys.journal_results_chunk("a", 5, 1), b"r1"),
            (keys.journal_results_chunk("a", 5, 2), b"r2"),
            (keys.journal_job("b"), b"B"),
        ]
    )
    before = await client.get_prefix(keys.journal_prefix)
    assert len(before.kvs) == 4
    await client.write_batch(
        [(keys.journal_job("c"), b"C")],
        delete_prefixes=[keys.journal_job_results_prefix("a")],
        deletes=[keys.journal_job("a")],
    )
    after = await client.get_prefix(keys.journal_prefix)
    assert [kv.key for kv in after.kvs] == [keys.journal_job("b"), keys.journal_job("c")]


async def test_a_refused_batch_writes_nothing(client: EtcdClient, keys: Keys) -> None:
    key = keys.journal_job("x")
    with pytest.raises(EtcdError):
        # etcd refuses a transaction that writes one key twice: all or nothing.
        await client.write_batch([(keys.journal_job("y"), b"1"), (key, b"1")], deletes=[key])
    assert (await client.get_prefix(keys.journal_prefix)).kvs == ()


def test_results_chunks_of_successive_leaders_never_collide() -> None:
    keys = Keys("/p/")
    assert keys.journal_results_chunk("j", 0x1F, 3) == "/p/journal/results/j/1f-3"
    assert keys.journal_results_chunk("j", 0x1F, 3) != keys.journal_results_chunk("j", 0x20, 3)
    assert keys.journal_result_ids(keys.journal_results_chunk("j", 7, 1)) == ("j", "7-1")


async def test_a_fenced_batch_is_applied_only_while_the_fence_key_lives(
    client: EtcdClient, keys: Keys
) -> None:
    fence = keys.election_candidate(0x1)
    _, kv = await client.put_if_absent(fence, b"leader")
    job = keys.journal_job("j")
    assert await client.write_batch([(job, b"1")], only_if_created=(fence, kv.create_revision))
    await client.delete(fence)
    applied = await client.write_batch([(job, b"2")], only_if_created=(fence, kv.create_revision))
    assert not applied
    written = await client.get(job)
    assert written is not None and written.value == b"1"
