"""The health gate's question, asked the same way in the serving host and in the probe child."""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge_agent.contracts import AdapterInfo
from edge_agent.errors import HealthCheckError, ModelRuntimeError
from edge_agent.runtime import GenerationParams, LoadedModel


@dataclass(frozen=True)
class ProbeAnswer:
    tokens: int
    text: str
    seconds: float


def ask(
    model: LoadedModel,
    question: str,
    max_tokens: int,
    *,
    adapter: AdapterInfo | None = None,
    chat_template: str | None = None,
    deadline: float | None = None,
) -> ProbeAnswer:
    """One short greedy answer within the time left; an adapter is asked its own probe request with
    its system prompt and within its token budget. No token, or no answer in time: HealthCheckError."""
    what = f"adapter {adapter.name!r}" if adapter else "the model"
    if adapter is not None:
        question = adapter.prompt.probe or question
        max_tokens = min(max_tokens, adapter.generation.max_tokens or max_tokens)
    system = adapter.prompt.system if adapter else None
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]
    try:
        prompt = model.chat_prompt(messages, chat_template)
    except Exception:  # a model without a chat template still answers a plain prompt
        prompt = question
    started = time.monotonic()
    pieces = []
    try:
        gen = model.generate(
            model.encode(prompt),
            GenerationParams(max_new_tokens=max_tokens, adapter=adapter.name if adapter else None),
        )
        for piece in gen:
            pieces.append(piece)
            if deadline is not None and time.monotonic() > deadline:
                gen.cancel()
    except ModelRuntimeError as exc:
        raise HealthCheckError(f"{what} failed the probe: {exc}") from exc
    if deadline is not None and time.monotonic() > deadline:
        raise HealthCheckError(f"{what}: no answer to the probe prompt in time")
    if gen.completion_tokens < 1:
        raise HealthCheckError(f"{what}: the probe prompt produced no tokens")
    return ProbeAnswer(gen.completion_tokens, "".join(pieces), time.monotonic() - started)


__all__ = ["ProbeAnswer", "ask"]
