"""Helpers shared by the decomposer tests (test_decomposer_*.py): split requests, plans and
the checks on split errors."""

from __future__ import annotations

import json
from typing import Any, Literal

from deerflow_controller.core.model import ErrorClass, ErrorKind, TaskError
from deerflow_controller.decomposer import (
    Decomposer,
    MergeResult,
    Plan,
    SplitRequest,
)

DECOMPOSER = Decomposer()


def urls(n: int) -> list[str]:
    return [f"https://example.test/{i}" for i in range(n)]


def request(
    items: list[Any] | None = None,
    *,
    kind: Literal["io", "cpu"] = "io",
    item_s: float = 5.5,
    item_p90_s: float = 12.0,
    io_fraction: float | None = 0.975,
    free_slots: int = 8,
    field: str = "urls",
    payload: bytes | None = None,
    **extra: Any,
) -> SplitRequest:
    body = payload if payload is not None else json.dumps({field: items or []}).encode()
    return SplitRequest(
        handler="crawl",
        payload=body,
        items_field=field,
        kind=kind,
        item_s=item_s,
        item_p90_s=item_p90_s,
        io_fraction=io_fraction,
        free_slots=free_slots,
        **extra,
    )


def cpu_request(n: int, *, item_s: float, free_slots: int = 8, **extra: Any) -> SplitRequest:
    return request(
        list(range(n)),
        kind="cpu",
        item_s=item_s,
        item_p90_s=item_s * 2,
        io_fraction=0.05,
        free_slots=free_slots,
        field="items",
        **extra,
    )


def plan_of(req: SplitRequest, decomposer: Decomposer = DECOMPOSER) -> Plan:
    plan = decomposer.plan(req)
    assert isinstance(plan, Plan), plan
    return plan


def sizes(plan: Plan) -> list[int]:
    return [len(p.items) for p in plan.parts]


def error_of(result: Plan | TaskError | MergeResult | None) -> TaskError:
    if isinstance(result, MergeResult):
        assert result.error is not None, result
        return result.error
    assert isinstance(result, TaskError), result
    return result


def assert_split_error(error: TaskError, stage: str) -> None:
    assert error.kind is ErrorKind.SPLIT_ERROR
    assert error.message.startswith(f"handler 'crawl' {stage}: "), error.message
    assert not error.retryable
    assert error.error_class is ErrorClass.FATAL
