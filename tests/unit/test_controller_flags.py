"""deerflow-controller's flags that shape the core's policy: read into SchedulerConfig, and a
bad value refused with a sentence naming the flag before anything starts."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from deerflow_controller.main import _tenant_weights, main


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
