"""The seam every engine implements: load, tokenize, one timed greedy generation, logits of a text.

An engine instance lives in one case's child process only; its constructor is what "load time" times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

from bench.cases import CaseSpec
from edge_agent.bench_metrics import GenerationTiming


@dataclass
class EngineInfo:
    size_bytes: int
    weight_bytes_per_token: int
    precision: str | None = None
    quantization: dict[str, str | int | float | bool | None] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)


class Engine(Protocol):
    name: ClassVar[str]

    def __init__(self, case: CaseSpec) -> None: ...

    def tokenize(self, text: str) -> list[int]: ...

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat template applied, with the generation prompt, as token ids."""
        ...

    def generate(self, prompt_ids: list[int], n_tokens: int) -> GenerationTiming:
        """Greedy, exactly n_tokens (end-of-sequence ignored), timed from the request."""
        ...

    def logits(self, ids: list[int]) -> np.ndarray:
        """Next-token logits at every position, shape (len(ids), vocab)."""
        ...

    def info(self) -> EngineInfo: ...


__all__ = ["Engine", "EngineInfo"]
