"""Fetching an input by reference against a real controller: what the controller will not
serve comes back as a retryable HandlerError naming the input, the controller and its reason,
and a channel that is down is one too (issue #15)."""

from __future__ import annotations

import grpc
import pytest

from deerflow_agent import HandlerError
from deerflow_agent._fetch import fetch_input
from deerflow_agent._inputs import InputRef
from deerflow_common import channel_options
from deerflow_controller.config import ControllerConfig
from deerflow_controller.service.server import Controller

REF = InputRef("search-1", size=300_000, reference=True, sha256="0" * 64)


async def test_an_input_the_controller_does_not_keep_is_a_retryable_error_naming_why() -> None:
    controller = Controller(ControllerConfig(port=0))
    await controller.start()
    try:
        async with grpc.aio.insecure_channel(
            controller.address, options=channel_options()
        ) as channel:
            with pytest.raises(HandlerError) as failed:
                await fetch_input(
                    channel, controller.address, ("gone", "report", 1), REF, who=("a1", "i" * 32)
                )
    finally:
        await controller.stop(grace_s=0.5)
    error = failed.value
    assert error.retryable
    assert error.message == (
        f"could not fetch input 'search-1' (300000 bytes) from {controller.address}: "
        "PERMISSION_DENIED: agent 'a1' is not connected here with that instance; FetchInput "
        "must name the connected agent holding the attempt and its Hello's instance"
    )


async def test_no_stream_no_fetch() -> None:
    with pytest.raises(HandlerError, match=r"the stream to the controller is down"):
        await fetch_input(None, "", ("j", "t", 1), REF)
