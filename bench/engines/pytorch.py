"""PyTorch eager through transformers: the reference most people start from (fp32, KV cache, greedy)."""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import ClassVar

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.cases import CaseSpec
from bench.engines.base import EngineInfo
from bench.weights import folder_size, torch_weight_bytes_per_token
from edge_agent.bench_metrics import GenerationTiming
from edge_agent.errors import ModelRuntimeError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PytorchEngine:
    name: ClassVar[str] = "pytorch"

    def __init__(self, case: CaseSpec) -> None:
        self.case = case
        self.precision = case.precision or "fp32"
        if self.precision not in DTYPES:
            raise ModelRuntimeError(f"pytorch engine runs {sorted(DTYPES)}, not {self.precision!r}")
        if case.threads:
            torch.set_num_threads(case.threads)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(case.path))
            self.model = AutoModelForCausalLM.from_pretrained(str(case.path), dtype=DTYPES[self.precision])
        except (OSError, ValueError) as exc:
            raise ModelRuntimeError(f"{case.path}: transformers could not load it: {exc}") from exc
        self.model.eval()

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenize(text)

    @torch.inference_mode()
    def generate(self, prompt_ids: list[int], n_tokens: int) -> GenerationTiming:
        start = time.perf_counter()
        out = self.model(torch.tensor([prompt_ids]), use_cache=True)
        prefill = time.perf_counter()
        token = int(out.logits[0, -1].argmax())
        first = time.perf_counter()
        past = out.past_key_values
        for _ in range(n_tokens - 1):
            out = self.model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = int(out.logits[0, -1].argmax())
        end = time.perf_counter()
        return GenerationTiming(len(prompt_ids), n_tokens, first - start, end - start, prefill - start)

    @torch.inference_mode()
    def logits(self, ids: list[int]) -> np.ndarray:
        return self.model(torch.tensor([ids])).logits[0].float().numpy()

    def info(self) -> EngineInfo:
        return EngineInfo(
            size_bytes=folder_size(self.case.path),
            weight_bytes_per_token=torch_weight_bytes_per_token(self.model),
            precision=self.precision,
            quantization=dict(self.case.quantization),
            packages={p: version(p) for p in ("torch", "transformers")},
        )
