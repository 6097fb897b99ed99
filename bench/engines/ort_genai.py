"""onnxruntime-genai through the agent's own runtime (edge_agent.runtime), so bench measures what a
device runs."""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import ClassVar

import numpy as np

from bench.cases import CaseSpec
from bench.engines.base import EngineInfo
from bench.weights import folder_size, onnx_weight_bytes_per_token
from edge_agent.bench_metrics import GenerationTiming
from edge_agent.device_bench import time_generation
from edge_agent.runtime import LoadedModel

PRECISION_RE = re.compile(r"(fp32|fp16|bf16|int8|int4)")


class OrtGenaiEngine:
    name: ClassVar[str] = "onnxruntime-genai"

    def __init__(self, case: CaseSpec) -> None:
        self.case = case
        self.model = LoadedModel(case.path, case.provider, threads=case.threads)

    def tokenize(self, text: str) -> list[int]:
        return self.model.encode(text)

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return self.model.encode(self.model.chat_prompt(messages))

    def generate(self, prompt_ids: list[int], n_tokens: int) -> GenerationTiming:
        return time_generation(self.model, prompt_ids, n_tokens)

    def logits(self, ids: list[int]) -> np.ndarray:
        return self.model.sequence_logits(ids)

    def info(self) -> EngineInfo:
        precision = self.case.precision
        if not precision and (m := PRECISION_RE.search(self.case.path.name)):
            precision = m[1]
        return EngineInfo(
            size_bytes=folder_size(self.case.path),
            weight_bytes_per_token=onnx_weight_bytes_per_token(self.case.path / "model.onnx"),
            precision=precision,
            quantization=dict(self.case.quantization),
            packages={p: version(p) for p in ("onnxruntime-genai", "onnxruntime")},
        )
