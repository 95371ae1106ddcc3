"""deerflow-controller's flags that shape the core's policy: read into SchedulerConfig, and a
bad value refused with a sentence naming the flag before anything starts."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from deerflow_controller.main import _tenant_weights, _unreachable, main


def test_tenant_weights_are_read_as_tenant_equals_weight_pairs() -> None:
    assert _tenant_weights(("team-a=3", "team-b=0.5", "a=b=2")) == {
        "team-a": 3.0,
        "team-b": 0.5,
        "a=b": 2.0,
    }


@pytest.mark.parametrize("bad", ["team-a", "team-a=0", "team-a=-1", "team-a=nan", "team-a=x"])
def test_a_tenant_weight_that_is_not_a_positive_number_is_refused(bad: str) -> None:
    with pytest.raises(click.BadParameter) as caught:
        _tenant_weights((bad,))

    assert caught.value.message == (
        f"{bad!r} is not TENANT=WEIGHT with a positive weight, e.g. team-a=3"
    )


def test_the_controller_refuses_a_bad_tenant_weight_before_starting() -> None:
    result = CliRunner().invoke(main, ["--tenant-weight", "team-a=0"])

    assert result.exit_code == 2
    assert "Invalid value for --tenant-weight: 'team-a=0' is not TENANT=WEIGHT" in result.output


@pytest.mark.parametrize(
    ("host", "advertise"),
    [("0.0.0.0", ""), ("::", ""), ("127.0.0.1", "0.0.0.0:7400"), ("0.0.0.0", "[::]:7400")],
)
def test_a_controller_on_etcd_refuses_to_advertise_an_address_no_one_can_reach(
    host: str, advertise: str
) -> None:
    # It would publish 0.0.0.0:port as the leader's address: agents and clients on other hosts
    # would dial themselves. A separate process: before the check, the daemon simply ran.
    args = ["--host", host, "--port", "0", "--http-port", "0", "--etcd", "127.0.0.1:1"]
    done = subprocess.run(
        [sys.executable, "-m", "deerflow_controller.main", *args]
        + (["--advertise", advertise] if advertise else []),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert "Invalid value for --advertise" in done.stderr
    assert "is no address agents and clients can reach" in done.stderr
    assert "give --advertise HOST:PORT" in done.stderr


@pytest.mark.parametrize(
    ("address", "unreachable"),
    [
        ("0.0.0.0", True),
        ("0.0.0.0:7400", True),
        ("::", True),
        ("[::]:7400", True),
        ("", True),
        ("127.0.0.1", False),
        ("10.0.0.11:7400", False),
        ("[::1]:7400", False),
        ("controller-a:7400", False),
    ],
)
def test_wildcard_addresses_are_unreachable(address: str, unreachable: bool) -> None:
    assert _unreachable(address) is unreachable
