"""The fuzz suite's fixtures: one controller (and one agent, and the good-job probe) per test
module, and the count of inputs each test sent (summed by :mod:`tests.fuzz.report`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .plugin import INPUTS_PROPERTY
from .target import FuzzTarget


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    """A running controller with a real agent and good jobs flowing; after the module, the
    properties once more (alive, same pid, RSS, log, probe), then both processes stopped."""
    yield from running_target(tmp_path_factory)


def running_target(
    tmp_path_factory: pytest.TempPathFactory, *, http: bool = False
) -> Iterator[FuzzTarget]:
    """The body of a module's ``target`` fixture (``http``: with the dashboard's port)."""
    fuzz = FuzzTarget(tmp_path_factory.mktemp("fuzz"), http=http)
    try:
        fuzz.start()
        yield fuzz
        fuzz.check_serving()
    finally:
        fuzz.stop()


@dataclass
class InputCount:
    """Inputs one test sent (each hypothesis example counts the calls or messages it made)."""

    n: int = 0


@pytest.fixture
def inputs(request: pytest.FixtureRequest) -> Iterator[InputCount]:
    count = InputCount()
    yield count
    request.node.user_properties.append((INPUTS_PROPERTY, count.n))
