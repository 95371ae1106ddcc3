"""The partition router (docs/SCALING.md, "Past one controller"): a job id always maps to the
same controller group, every group gets jobs, and adding a group moves only about 1/G of them."""

from __future__ import annotations

from collections import Counter

import pytest

from deerflow_common.partition import PartitionRing

JOBS = [f"job-{i:06d}" for i in range(20_000)]


def test_a_job_maps_to_the_same_group_whatever_order_the_groups_are_listed_in() -> None:
    a = PartitionRing(["g0", "g1", "g2", "g3"])
    b = PartitionRing(["g3", "g1", "g0", "g2"])

    assert [a.owner(j) for j in JOBS] == [b.owner(j) for j in JOBS]
    assert [a.owner(j) for j in JOBS] == [a.owner(j) for j in JOBS]


@pytest.mark.parametrize("groups", [1, 2, 4, 8, 16])
def test_every_group_gets_a_near_even_share_of_jobs(groups: int) -> None:
    ring = PartitionRing([f"g{i}" for i in range(groups)])

    counts = Counter(ring.owner(j) for j in JOBS)

    assert set(counts) == set(ring.groups)
    mean = len(JOBS) / groups
    assert max(counts.values()) <= 1.25 * mean
    assert min(counts.values()) >= 0.75 * mean


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_adding_a_group_moves_only_about_one_in_g_plus_one_jobs_and_only_to_it(
    groups: int,
) -> None:
    before = PartitionRing([f"g{i}" for i in range(groups)])
    after = before.with_group("new")

    moved = [j for j in JOBS if before.owner(j) != after.owner(j)]

    assert all(after.owner(j) == "new" for j in moved)
    share = len(moved) / len(JOBS)
    expected = 1 / (groups + 1)
    assert 0.7 * expected <= share <= 1.3 * expected


def test_removing_a_group_moves_only_its_own_jobs() -> None:
    before = PartitionRing(["g0", "g1", "g2", "g3"])
    after = before.without_group("g2")

    moved = [j for j in JOBS if before.owner(j) != after.owner(j)]

    assert moved and all(before.owner(j) == "g2" for j in moved)
    assert "g2" not in {after.owner(j) for j in JOBS}


@pytest.mark.parametrize(
    ("groups", "replicas"), [([], 128), (["a", "a"], 128), (["a", ""], 128), (["a"], 0)]
)
def test_a_ring_without_groups_or_with_bad_names_is_refused(
    groups: list[str], replicas: int
) -> None:
    with pytest.raises(ValueError):
        PartitionRing(groups, replicas=replicas)
