"""Handler traits: declared on the Handler or through @handler, checked at declaration, and sent
to the controller in Hello."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from deerflow_agent import Agent, AgentConfig, Handler, HandlerKind, TaskContext, handler
from deerflow_agent._handler import DEFAULT_SIMILARITY_THRESHOLD
from deerflow_agent.builtins import cpu, echo, sleep, work
from deerflow_agent.providers import crawl, llm, search
from deerflow_protos import agent_pb2


async def lookup(ctx: TaskContext, payload: bytes) -> bytes:
    return payload


def join(outputs: Sequence[bytes | None]) -> bytes:
    return b"".join(o for o in outputs if o is not None)


def halves(payload: bytes) -> list[bytes]:
    return [payload[: len(payload) // 2], payload[len(payload) // 2 :]]


def test_a_handler_that_declares_nothing_claims_nothing() -> None:
    h = Handler("lookup", lookup)

    assert (h.cacheable, h.nondeterministic, h.similarity_field) == (False, False, "")
    assert (h.similarity_threshold, h.cache_ttl_s, h.items_field) == (0.0, 0.0, "")
    assert (h.splitter, h.merger) == (None, None)
    assert (h.default_duration_s, h.default_cpu_s, h.default_memory_bytes) == (0.0, 0.0, 0)
    assert h.hello_traits() == {}


def test_the_decorator_passes_every_trait_to_the_handler() -> None:
    h = handler(
        "lookup",
        cacheable=True,
        nondeterministic=True,
        similarity_field="query",
        similarity_threshold=0.8,
        cache_ttl_s=3600,
        items_field="queries",
        splitter=halves,
        merger=join,
        default_duration_s=1.5,
        default_cpu_s=0.01,
        default_memory_bytes=1 << 20,
    )(lookup)

    assert h.hello_traits() == {
        "cacheable": True,
        "nondeterministic": True,
        "similarity_field": "query",
        "similarity_threshold": 0.8,
        "cache_ttl_s": 3600,
        "items_field": "queries",
        "default_duration_s": 1.5,
        "default_cpu_s": 0.01,
        "default_memory_bytes": 1 << 20,
    }
    assert (h.splitter, h.merger) == (halves, join)


def test_a_similarity_field_without_a_threshold_gets_the_default_one() -> None:
    h = handler(cacheable=True, similarity_field="query")(lookup)

    assert h.similarity_threshold == DEFAULT_SIMILARITY_THRESHOLD


@pytest.mark.parametrize(
    ("traits", "complaint"),
    [
        ({"similarity_field": "query"}, "needs cacheable=True"),
        ({"cacheable": True, "similarity_threshold": 0.8}, "needs a similarity_field"),
        ({"cacheable": True, "similarity_field": "q", "similarity_threshold": 0}, r"\(0, 1\]"),
        ({"cacheable": True, "similarity_field": "q", "similarity_threshold": 1.5}, r"\(0, 1\]"),
        ({"cacheable": True, "similarity_field": "a query"}, "must name a JSON field"),
        ({"cache_ttl_s": 60}, "cache_ttl_s=60 needs cacheable=True"),
        ({"cacheable": True, "cache_ttl_s": -1}, "cache_ttl_s must be a finite number >= 0"),
        ({"default_duration_s": float("nan")}, "default_duration_s must be a finite number"),
        ({"default_cpu_s": -0.5}, "default_cpu_s must be a finite number >= 0"),
        ({"default_memory_bytes": 1.5}, "default_memory_bytes must be an int >= 0"),
        ({"splitter": halves}, "a splitter needs a merger"),
        ({"merger": join}, "a merger needs a splitter or an items_field"),
        ({"items_field": ""}, None),
    ],
)
def test_contradictory_or_impossible_traits_fail_at_declaration(
    traits: dict[str, object], complaint: str | None
) -> None:
    if complaint is None:
        handler(**traits)(lookup)  # type: ignore[call-overload]
        return
    with pytest.raises(ValueError, match=complaint):
        handler(**traits)(lookup)  # type: ignore[call-overload]


def test_a_merger_with_an_items_field_is_enough_to_split_by_field() -> None:
    h = handler(items_field="urls", merger=join)(lookup)

    assert h.items_field == "urls" and h.splitter is None


def test_hello_carries_each_handlers_traits_and_leaves_undeclared_ones_unset() -> None:
    plain = Handler("plain", lookup)
    agent = Agent(AgentConfig(slots=4), {"search": search, "plain": plain, "work": work})

    infos = {h.name: h for h in agent._hello().hello.handlers}

    assert infos["search"].cacheable and infos["search"].similarity_field == "query"
    assert infos["search"].similarity_threshold == DEFAULT_SIMILARITY_THRESHOLD
    assert infos["search"].default_duration_s == search.default_duration_s > 0
    assert infos["work"].items_field == "items" and not infos["work"].cacheable
    assert infos["plain"] == agent_pb2.HandlerInfo(name="plain", kind=agent_pb2.IO)


def test_the_builtins_declare_what_the_controllers_policies_need() -> None:
    assert not echo.cacheable and not echo.nondeterministic  # no-op benchmarks measure us
    assert llm.cacheable and llm.nondeterministic
    assert search.cacheable and search.similarity_field == "query"
    assert crawl.cacheable and crawl.items_field == "urls" and crawl.merger is not None
    assert work.items_field == "items" and work.merger is not None
    assert not (sleep.cacheable or cpu.cacheable or work.cacheable)
    assert cpu.kind is HandlerKind.CPU and cpu.default_cpu_s > 0
    for h in (echo, sleep, cpu, work, llm, search, crawl):
        assert h.default_duration_s > 0, h.name
