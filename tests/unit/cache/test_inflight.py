"""In-flight dedup: leaders, followers, leader failure."""

from __future__ import annotations

from deerflow_controller.cache import InflightTable


def test_first_task_leads_and_identical_ones_follow() -> None:
    t = InflightTable()
    assert t.attach(b"k", ("j1", "a")) is None
    assert t.attach(b"k", ("j2", "b")) == ("j1", "a")
    assert t.attach(b"k", ("j3", "c")) == ("j1", "a")
    assert t.attach(b"k", ("j1", "a")) is None  # the leader's retry
    assert t.complete(b"k") == [("j2", "b"), ("j3", "c")]
    assert t.attach(b"k", ("j4", "d")) is None  # a new flight


def test_leader_failure_releases_followers_and_the_next_attach_leads() -> None:
    t = InflightTable()
    t.attach(b"k", ("j1", "a"))
    t.attach(b"k", ("j2", "b"))
    t.attach(b"k", ("j3", "c"))
    released = t.fail(b"k")
    assert released == [("j2", "b"), ("j3", "c")] and t.released == 2
    assert t.attach(b"k", released[0]) is None
    assert t.attach(b"k", released[1]) == ("j2", "b")


def test_a_cancelled_follower_is_not_answered() -> None:
    t = InflightTable()
    t.attach(b"k", ("j1", "a"))
    t.attach(b"k", ("j2", "b"))
    t.detach(b"k", ("j2", "b"))
    assert t.complete(b"k") == []
