"""The OpenAI wire format this server speaks: request and response models (also its OpenAPI document).

Only what a small on-device model can honour is accepted; fields we cannot honour with a value that
matters (tools, logprobs, n > 1, ...) are rejected with a 400 rather than silently ignored.
Extensions beyond OpenAI: `top_k`, `repetition_penalty`, `min_tokens` (vLLM's name).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.contracts import AdapterInfo

StopField = Annotated[
    str | list[Annotated[str, Field(min_length=1, max_length=256)]] | None,
    Field(description="up to 4 strings; generation ends before the first one, which is not returned"),
]


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="send a last chunk with token counts")


class SamplingRequest(BaseModel):
    """Fields the chat and the completion endpoints share."""

    # NaN and infinity are refused as such (not as "should be <= 2"); integers are strict (no `true`).
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str = Field(
        min_length=1,
        max_length=256,
        description="'name', 'name@version', and ':adapter' after either for a LoRA adapter",
    )
    max_tokens: int | None = Field(None, ge=1, strict=True, description="tokens to generate at most")
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy; default: the bundle's")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(
        None, ge=1, le=1000, strict=True, description="extension: sample from the k most likely"
    )
    repetition_penalty: float | None = Field(None, gt=0, le=10, description="extension")
    min_tokens: int | None = Field(
        None, ge=0, le=100_000, strict=True, description="extension: no end-of-text before"
    )
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="accepted, not applied")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="accepted, not applied")
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1, strict=True)
    stop: StopField = None
    n: int = Field(1, ge=1, le=1, strict=True, description="only one choice per request")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(
        None, ge=1, strict=True, description="the newer name of max_tokens"
    )


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] = Field(description="a string (or a list holding one string)")
    echo: bool = Field(False, description="return the prompt before the completion")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "slmops"
    adapter: AdapterInfo | None = Field(
        None, description="for 'name:adapter': what the adapter does, how it is asked, its scores"
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
