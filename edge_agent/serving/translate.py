"""Pure translations between the OpenAI wire format and the runtime (no I/O, no model calls)."""

from __future__ import annotations

from typing import Any

from edge_agent.contracts import GenerationDefaults
from edge_agent.errors import ContextLengthError, RequestError
from edge_agent.runtime import Generation, GenerationParams
from edge_agent.serving.openai_types import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionRequest,
    Delta,
    SamplingRequest,
    Usage,
)

MAX_STOP_SEQUENCES = 4

# Fields of the OpenAI API a value of which we cannot honour: refused rather than ignored.
_UNSUPPORTED = ("tools", "functions", "tool_choice", "logprobs", "top_logprobs", "logit_bias", "suffix")


def check_supported(req: SamplingRequest) -> None:
    extra = req.model_extra or {}
    for name in _UNSUPPORTED:
        value = extra.get(name)
        if value in (None, False, [], {}, "none", "auto", ""):
            continue
        raise RequestError(f"{name!r} is not supported by this server", name)
    if extra.get("best_of") not in (None, 1):
        raise RequestError(
            "'best_of' is not supported by this server (one completion per request)", "best_of"
        )
    fmt = extra.get("response_format")
    if fmt not in (None, {"type": "text"}):
        raise RequestError("only response_format {'type': 'text'} is supported", "response_format")


def chat_messages(req: ChatCompletionRequest) -> list[dict[str, str]]:
    """Messages as the chat template wants them: plain strings, 'developer' read as 'system'."""
    out = []
    for m in req.messages:
        content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or [])
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return out


def with_system(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """The adapter's system turn first, unless the request brought its own."""
    if system is None or any(m["role"] == "system" for m in messages):
        return messages
    return [{"role": "system", "content": system}, *messages]


def completion_prompt(req: CompletionRequest, defaults: GenerationDefaults) -> str:
    if isinstance(req.prompt, list):
        if len(req.prompt) != 1:
            raise RequestError("prompt must be one string (a list of exactly one string)", "prompt")
        prompt = req.prompt[0]
    else:
        prompt = req.prompt
    if defaults.prompt_template and "{prompt}" in defaults.prompt_template:
        prompt = defaults.prompt_template.replace("{prompt}", prompt)
    return prompt


def generation_params(
    req: SamplingRequest,
    defaults: GenerationDefaults,
    *,
    adapter: str | None,
    prompt_tokens: int,
    context_length: int,
    default_max_tokens: int | None = None,
) -> GenerationParams:
    """The bundle's defaults overridden by the request; the token budget checked against the context.
    `default_max_tokens` (an adapter's) is the budget when the request sets none."""
    check_supported(req)
    requested = getattr(req, "max_completion_tokens", None) or req.max_tokens
    limit = min(defaults.max_length, context_length)  # the bundle may allow less than the model's window
    room = limit - prompt_tokens
    if room < 1 or (requested is not None and requested > room):
        asked = f" and {requested} more were requested" if requested is not None else ""
        raise ContextLengthError(
            f"this model's maximum context length is {limit} tokens; the prompt has {prompt_tokens}{asked}",
            "max_tokens"
            if room >= 1
            else ("messages" if isinstance(req, ChatCompletionRequest) else "prompt"),
        )
    if requested is None:
        requested = min(default_max_tokens, room) if default_max_tokens else room
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > MAX_STOP_SEQUENCES:
        raise RequestError(f"at most {MAX_STOP_SEQUENCES} stop sequences", "stop")
    return GenerationParams.from_defaults(
        defaults,
        max_new_tokens=requested,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        repetition_penalty=req.repetition_penalty,
        seed=None if req.seed is None else req.seed & 0x7FFFFFFF,
        min_new_tokens=req.min_tokens,
        stop=tuple(stop),
        adapter=adapter,
    )


def usage_of(gen: Generation) -> Usage:
    return Usage(
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        total_tokens=gen.prompt_tokens + gen.completion_tokens,
    )


def finish_reason(gen: Generation) -> Any:
    return gen.finish_reason if gen.finish_reason in ("stop", "length") else None


def to_chat_completion(rid: str, created: int, model: str, text: str, gen: Generation) -> ChatCompletion:
    return ChatCompletion(
        id=rid,
        created=created,
        model=model,
        choices=[ChatChoice(message=AssistantMessage(content=text), finish_reason=finish_reason(gen))],
        usage=usage_of(gen),
    )


def to_completion(rid: str, created: int, model: str, text: str, gen: Generation) -> Completion:
    return Completion(
        id=rid,
        created=created,
        model=model,
        choices=[CompletionChoice(text=text, finish_reason=finish_reason(gen))],
        usage=usage_of(gen),
    )


def chat_chunk(
    rid: str, created: int, model: str, *, content: str | None = None, role: bool = False, finish: Any = None
) -> ChatCompletionChunk:
    delta = Delta(role="assistant" if role else None, content=content)
    return ChatCompletionChunk(
        id=rid, created=created, model=model, choices=[ChunkChoice(delta=delta, finish_reason=finish)]
    )


def chat_usage_chunk(rid: str, created: int, model: str, gen: Generation) -> ChatCompletionChunk:
    return ChatCompletionChunk(id=rid, created=created, model=model, choices=[], usage=usage_of(gen))


def completion_chunk(rid: str, created: int, model: str, text: str, finish: Any = None) -> Completion:
    return Completion(
        id=rid, created=created, model=model, choices=[CompletionChoice(text=text, finish_reason=finish)]
    )


def completion_usage_chunk(rid: str, created: int, model: str, gen: Generation) -> Completion:
    return Completion(id=rid, created=created, model=model, choices=[], usage=usage_of(gen))
