"""What an attempt's Result carries beside its output: CPU time and peak memory of cpu handlers,
and the error class of a failure."""

from __future__ import annotations

import asyncio
import json
import pickle

import pytest

from deerflow_agent import (
    Attempt,
    ErrorClass,
    FatalError,
    Handler,
    HandlerEnvironment,
    HandlerError,
    Outcome,
    Runtime,
    TaskContext,
)
from deerflow_agent._stream import Results as _Results
from deerflow_agent._stream import build_message as _build
from deerflow_agent.builtins import work
from deerflow_common.errors import ErrorKind

from . import cpu_plugin


async def _run(handler: Handler, payload: bytes = b"x", timeout_s: float = 0.0) -> Outcome:
    outcomes: list[Outcome] = []
    runtime = Runtime(
        {handler.name: handler},
        slots=1,
        cpu_workers=1,
        on_started=lambda key, t: None,
        on_finished=outcomes.append,
    )
    runtime.submit([Attempt(("job", "task", 1), handler.name, payload, timeout_s)])
    await runtime.wait_idle()
    await runtime.aclose()
    return outcomes[0]


async def test_a_cpu_attempt_reports_its_workers_cpu_time_and_peak_memory() -> None:
    outcome = await _run(cpu_plugin.burn)

    assert outcome.ok
    assert outcome.cpu_s > 0
    assert outcome.rss_bytes >= 8 << 20
    result = _build(_Results([outcome])).results.results[0]
    assert (result.cpu_s, result.rss_bytes) == (outcome.cpu_s, outcome.rss_bytes)


async def test_an_io_attempt_reports_no_resources_rather_than_a_guess() -> None:
    async def quick(ctx: TaskContext, payload: bytes) -> bytes:
        return payload

    outcome = await _run(Handler("quick", quick))

    assert (outcome.cpu_s, outcome.rss_bytes) == (0.0, 0)
    result = _build(_Results([outcome])).results.results[0]
    assert not result.HasField("error") and (result.cpu_s, result.rss_bytes) == (0.0, 0)


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (HandlerError("429", error_class=ErrorClass.RATE_LIMITED), ErrorClass.RATE_LIMITED),
        (FatalError("unsafe", error_class=ErrorClass.SOFT), ErrorClass.SOFT),
        (HandlerError("who knows"), ErrorClass.UNSPECIFIED),
        (RuntimeError("a bug"), ErrorClass.UNSPECIFIED),
    ],
)
async def test_a_failures_error_class_travels_to_the_wire(
    raised: Exception, expected: ErrorClass
) -> None:
    async def failing(ctx: TaskContext, payload: bytes) -> bytes:
        raise raised

    outcome = await _run(Handler("failing", failing))

    assert outcome.error is not None and outcome.error.error_class is expected
    error = _build(_Results([outcome])).results.results[0].error
    assert error.error_class == int(expected)


async def test_an_attempt_past_its_timeout_is_classed_timeout() -> None:
    async def hangs(ctx: TaskContext, payload: bytes) -> bytes:
        await asyncio.get_running_loop().create_future()
        return b""

    outcome = await _run(Handler("hangs", hangs), timeout_s=0.01)

    assert outcome.error is not None
    assert (outcome.error.kind, outcome.error.error_class) == (
        ErrorKind.TIMEOUT,
        ErrorClass.TIMEOUT,
    )


async def test_a_cpu_handlers_error_class_survives_the_process_pool() -> None:
    outcome = await _run(cpu_plugin.overloaded)

    assert outcome.error is not None
    assert outcome.error.error_class is ErrorClass.RATE_LIMITED
    assert outcome.error.retry_after_s == 2.0


def test_error_classes_survive_pickling() -> None:
    retry = pickle.loads(pickle.dumps(HandlerError("m", error_class=ErrorClass.TRANSIENT)))
    soft = pickle.loads(pickle.dumps(FatalError("m", error_class=ErrorClass.SOFT)))

    assert (retry.error_class, soft.error_class) == (ErrorClass.TRANSIENT, ErrorClass.SOFT)


# ------------------------------------------------------------------------- the work handler


async def test_work_returns_its_items_and_reports_progress_per_item() -> None:
    env = HandlerEnvironment()

    out = await env.run(work, json.dumps({"items": ["a", "b", "c"], "per_item_s": 0}).encode())

    assert json.loads(out) == {"results": ["a", "b", "c"]}
    assert env.progress == [(1 / 3, "1/3 items"), (2 / 3, "2/3 items"), (1.0, "3/3 items")]


async def test_work_split_into_chunks_and_merged_gives_the_whole_tasks_output() -> None:
    payload = json.dumps({"items": list(range(7)), "per_item_s": 0}).encode()

    merged = await HandlerEnvironment().run_split(work, payload, chunk=3)

    assert merged == await HandlerEnvironment().run(work, payload)


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"items": "abc"}, "items"), ({"items": [], "per_item_s": -1}, "per_item_s")],
)
async def test_work_refuses_a_malformed_payload_naming_the_field(
    payload: dict[str, object], field: str
) -> None:
    with pytest.raises(FatalError, match=field):
        await HandlerEnvironment().run(work, json.dumps(payload).encode())
