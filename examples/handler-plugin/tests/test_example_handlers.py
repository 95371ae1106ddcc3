"""The example handlers under the agent's handler test environment (no controller, no agent):
outputs, progress, inputs from dependencies, splitting and the errors a submitter sees."""

from __future__ import annotations

import json

import pytest
from deerflow_example_handlers import digest, tally, wordcount

from deerflow_agent import ErrorClass, FatalError, HandlerError, HandlerKind
from deerflow_agent.testing import HandlerEnvironment

TEXTS = {"texts": ["The cat sat.", "The dog sat on the cat's mat."]}


async def test_wordcount_counts_words_and_reports_progress_per_text() -> None:
    env = HandlerEnvironment()
    out = json.loads(await env.run(wordcount, json.dumps(TEXTS).encode()))
    assert out["texts"] == 2
    assert out["counts"] == {"the": 3, "cat": 1, "sat": 2, "dog": 1, "on": 1, "cat's": 1, "mat": 1}
    assert env.progress == [(0.5, "1/2 texts"), (1.0, "2/2 texts")]


async def test_wordcount_declares_the_traits_the_controller_uses() -> None:
    assert wordcount.kind is HandlerKind.IO
    assert wordcount.cacheable and wordcount.items_field == "texts"
    assert wordcount.description.startswith("Count the words")


async def test_a_split_wordcount_merges_to_the_same_answer() -> None:
    payload = json.dumps(TEXTS).encode()
    whole = json.loads(await HandlerEnvironment().run(wordcount, payload))
    split = json.loads(await HandlerEnvironment().run_split(wordcount, payload, chunk=1))
    assert split == whole


@pytest.mark.parametrize(
    ("payload", "said"),
    [
        (b"not json", "the payload is not JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'{"text": "a"}', 'field "texts" must be a list of strings'),
        (b'{"texts": ["a", 3]}', '"texts"[1] must be a string, got int'),
    ],
)
async def test_a_bad_payload_fails_at_once_naming_what_is_wrong(payload: bytes, said: str) -> None:
    with pytest.raises(FatalError, match=said.replace("[", r"\[").replace("]", r"\]")):
        await HandlerEnvironment().run(wordcount, payload)


async def test_an_unavailable_upstream_is_a_retryable_error_until_a_later_attempt() -> None:
    payload = json.dumps({**TEXTS, "available_from_attempt": 2}).encode()
    with pytest.raises(HandlerError) as caught:
        await HandlerEnvironment(attempt=1).run(wordcount, payload)
    assert caught.value.retryable and caught.value.error_class is ErrorClass.UNSPECIFIED
    out = json.loads(await HandlerEnvironment(attempt=2).run(wordcount, payload))
    assert out["texts"] == 2


async def test_tally_sums_the_outputs_of_its_dependencies() -> None:
    a = json.dumps({"counts": {"cat": 2, "dog": 1}, "texts": 1}).encode()
    b = json.dumps({"counts": {"cat": 1, "mat": 5}, "texts": 1}).encode()
    out = await HandlerEnvironment().run(tally, b'{"top": 2}', inputs={"count-a": a, "count-b": b})
    assert json.loads(out) == {"top": [["mat", 5], ["cat", 3]]}


async def test_tally_without_inputs_says_how_to_submit_it() -> None:
    with pytest.raises(FatalError, match="inputs='all'"):
        await HandlerEnvironment().run(tally, b"{}")


async def test_tally_names_an_input_that_is_not_a_word_count() -> None:
    with pytest.raises(FatalError, match="input 'x' is not a wordcount output"):
        await HandlerEnvironment().run(tally, b"", inputs={"x": b"hello"})


async def test_digest_runs_as_a_cpu_handler() -> None:
    assert digest.kind is HandlerKind.CPU
    out = json.loads(await HandlerEnvironment().run(digest, b"abc"))
    assert out == {
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "bytes": 3,
    }
