"""llama.cpp through llama-cpp-python on a GGUF file: the engine people compare CPU inference with.

The loop is the same shape as the others (evaluate the prompt, argmax, evaluate one token at a
time), on llama.cpp's own KV cache; logits come straight from the context, so no sampler runs.
Quality needs logits for every position, which llama-cpp-python keeps only with `logits_all=True`:
a second instance, made after the speed runs (peak RSS is taken before it).
"""

from __future__ import annotations

import time
from importlib.metadata import version
from typing import ClassVar

import numpy as np
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from bench.cases import CaseSpec
from bench.engines.base import EngineInfo
from bench.weights import gguf_weight_bytes_per_token
from edge_agent.bench_metrics import GenerationTiming
from edge_agent.errors import ModelRuntimeError

DEFAULT_CONTEXT = 2048


class LlamaCppEngine:
    name: ClassVar[str] = "llama.cpp"

    def __init__(self, case: CaseSpec) -> None:
        self.case = case
        self.llm = self._load(case.context_tokens or DEFAULT_CONTEXT, logits_all=False)
        self.n_vocab = self.llm.n_vocab()
        self._full: Llama | None = None  # the logits_all instance, made for quality only

    def _load(self, n_ctx: int, logits_all: bool) -> Llama:
        try:
            return Llama(
                model_path=str(self.case.path),
                n_ctx=n_ctx,
                n_batch=min(512, n_ctx),
                n_threads=self.case.threads,
                n_threads_batch=self.case.threads,
                logits_all=logits_all,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelRuntimeError(f"{self.case.path}: llama.cpp could not load it: {exc}") from exc

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode(), add_bos=False, special=False))

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelRuntimeError(f"{self.case.path}: the GGUF has no chat template")
        special = {"special": True}
        eos = self.llm.detokenize([self.llm.token_eos()], **special).decode(errors="replace")
        bos = self.llm.detokenize([self.llm.token_bos()], **special).decode(errors="replace")
        prompt = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)(messages=messages).prompt
        return list(self.llm.tokenize(prompt.encode(), add_bos=False, special=True))

    def _next_token(self) -> int:
        row = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.n_vocab,))
        return int(row.argmax())

    def generate(self, prompt_ids: list[int], n_tokens: int) -> GenerationTiming:
        if len(prompt_ids) + n_tokens > self.llm.n_ctx():
            raise ModelRuntimeError(f"{len(prompt_ids)} + {n_tokens} tokens exceed n_ctx {self.llm.n_ctx()}")
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(prompt_ids)
        prefill = time.perf_counter()
        token = self._next_token()
        first = time.perf_counter()
        for _ in range(n_tokens - 1):
            self.llm.eval([token])
            token = self._next_token()
        end = time.perf_counter()
        return GenerationTiming(len(prompt_ids), n_tokens, first - start, end - start, prefill - start)

    def logits(self, ids: list[int]) -> np.ndarray:
        if self._full is None or self._full.n_ctx() < len(ids):
            self.llm.close()  # one model in memory at a time; speed runs are over by now
            self._full = self._load(max(len(ids), 512), logits_all=True)
        self._full.reset()
        self._full.eval(ids)
        return np.array(self._full.scores[: len(ids)], dtype=np.float32)

    def info(self) -> EngineInfo:
        file_type = self.llm.metadata.get("general.file_type")
        return EngineInfo(
            size_bytes=self.case.path.stat().st_size,
            weight_bytes_per_token=gguf_weight_bytes_per_token(self.case.path),
            precision=self.case.precision or self.case.variant,
            quantization={"gguf": self.case.variant, "general.file_type": file_type},
            packages={"llama-cpp-python": version("llama-cpp-python")},
        )
