"""Pure pieces: stop-string hold-back, defaults merging, model ids, queue bound."""

from __future__ import annotations

import asyncio

import pytest

from edge_agent.contracts import GenerationDefaults
from edge_agent.errors import OverloadedError
from edge_agent.runtime import GenerationParams, _StopMatcher
from edge_agent.serving.admission import Admission
from edge_agent.serving.model_host import parse_model_id


def feed_all(stops: tuple[str, ...], pieces: list[str]) -> tuple[str, bool]:
    m = _StopMatcher(stops)
    out = []
    for p in pieces:
        text, hit = m.feed(p)
        out.append(text)
        if hit:
            return "".join(out), True
    return "".join(out) + m.flush(), False


@pytest.mark.parametrize(
    ("stops", "pieces", "expected"),
    [
        ((), ["a", "b"], ("ab", False)),
        (("\n\n",), ["Hi", "\n", "\n", "more"], ("Hi", True)),  # split across pieces
        (("END",), ["xE", "N", "y"], ("xENy", False)),  # a false start is released
        (("END", "N"), ["xE", "N"], ("xE", True)),  # the earliest stop wins
        (("stop",), ["st"], ("st", False)),  # held text comes out at the end
    ],
)
def test_stop_strings_are_never_emitted(stops, pieces, expected) -> None:  # type: ignore[no-untyped-def]
    assert feed_all(stops, pieces) == expected


def test_request_overrides_bundle_defaults() -> None:
    defaults = GenerationDefaults(temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1)
    p = GenerationParams.from_defaults(defaults, temperature=0.0, top_p=None, max_new_tokens=5)
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.max_new_tokens) == (0.0, 0.9, 40, 1.1, 5)


def test_model_ids() -> None:
    assert parse_model_id("tiny") == ("tiny", None, None)
    assert parse_model_id("tiny@1.2.3") == ("tiny", "1.2.3", None)
    assert parse_model_id("tiny:alpha") == ("tiny", None, "alpha")
    assert parse_model_id("tiny@1.2.3-rc.1:alpha") == ("tiny", "1.2.3-rc.1", "alpha")


def test_admission_runs_queues_then_refuses() -> None:
    async def scenario() -> None:
        gate = Admission(max_concurrent=1, max_queue=1)
        await gate.acquire()  # runs
        waiting = asyncio.create_task(gate.acquire())  # queues
        await asyncio.sleep(0)
        assert (gate.running, gate.waiting) == (1, 1)
        with pytest.raises(OverloadedError) as err:
            await gate.acquire()
        assert err.value.retry_after_s >= 1
        gate.release(0.5)
        await waiting
        assert (gate.running, gate.waiting, gate.rejected) == (1, 0, 1)

    asyncio.run(scenario())


def test_request_params_fall_back_to_the_bundle_defaults() -> None:
    from edge_agent.errors import ContextLengthError
    from edge_agent.serving.openai_types import CompletionRequest
    from edge_agent.serving.translate import generation_params

    defaults = GenerationDefaults(max_length=100, temperature=0.8, top_p=0.9, repetition_penalty=1.2)
    req = CompletionRequest(model="m", prompt="x", stop="\n", seed=2**40 + 5)
    p = generation_params(req, defaults, adapter="a", prompt_tokens=30, context_length=512)
    assert (p.temperature, p.top_p, p.repetition_penalty) == (0.8, 0.9, 1.2)
    assert p.max_new_tokens == 70  # the bundle's max_length bounds prompt + answer
    assert (p.stop, p.adapter, p.seed) == (("\n",), "a", 5)
    greedy = generation_params(
        CompletionRequest(model="m", prompt="x", temperature=0, max_tokens=70),
        defaults,
        adapter=None,
        prompt_tokens=30,
        context_length=512,
    )
    assert (greedy.temperature, greedy.max_new_tokens) == (0.0, 70)
    with pytest.raises(ContextLengthError):
        generation_params(
            CompletionRequest(model="m", prompt="x", max_tokens=71),
            defaults,
            adapter=None,
            prompt_tokens=30,
            context_length=512,
        )
