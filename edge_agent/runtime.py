"""Run one model variant on onnxruntime-genai: load with a chosen execution provider, generate text.

This is the only module that touches onnxruntime_genai; the health gate, the API server and bench
all go through it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime_genai as og

from edge_agent.errors import ModelRuntimeError

# ONNX Runtime provider names -> the names onnxruntime-genai's Config.append_provider takes.
GENAI_PROVIDER_NAMES = {
    "CPUExecutionProvider": None,  # cpu is the default: clear the list
    "CUDAExecutionProvider": "cuda",
    "DmlExecutionProvider": "dml",
    "QNNExecutionProvider": "QNN",
    "OpenVINOExecutionProvider": "OpenVINO",
    "WebGpuExecutionProvider": "WebGPU",
    "NvTensorRTRTXExecutionProvider": "NvTensorRtRtx",
}


@dataclass
class GenerationParams:
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None
    # Fixed-length runs (bench): end-of-sequence is ignored until this many tokens were generated.
    min_new_tokens: int = 0


class LoadedModel:
    """One variant loaded with one execution provider."""

    def __init__(
        self, variant_dir: Path, provider: str = "CPUExecutionProvider", threads: int | None = None
    ) -> None:
        self.variant_dir = Path(variant_dir)
        self.provider = provider
        self.threads = threads
        if provider not in GENAI_PROVIDER_NAMES:
            raise ModelRuntimeError(f"unknown execution provider {provider!r}")
        try:
            config = og.Config(str(self.variant_dir))
            if threads:
                session = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
                config.overlay(json.dumps({"model": {"decoder": {"session_options": session}}}))
            config.clear_providers()
            genai_name = GENAI_PROVIDER_NAMES[provider]
            if genai_name:
                config.append_provider(genai_name)
            self.model = og.Model(config)
            self.tokenizer = og.Tokenizer(self.model)
        except Exception as exc:  # onnxruntime-genai raises plain RuntimeError/Exception for every failure
            raise ModelRuntimeError(f"{self.variant_dir}: could not load with {provider}: {exc}") from exc
        genai_config = json.loads((self.variant_dir / "genai_config.json").read_text())
        self.context_length = int(genai_config["model"].get("context_length", 2048))

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def stream(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[str]:
        """Yield decoded text pieces, one per generated token."""
        decoder = self.tokenizer.create_stream()
        for token in self.token_ids(prompt_ids, params):
            yield decoder.decode(token)

    def token_ids(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[int]:
        """Yield generated token ids one at a time (the prompt runs before the first one)."""
        gp = og.GeneratorParams(self.model)
        max_length = min(self.context_length, len(prompt_ids) + params.max_new_tokens)
        options: dict[str, float | int | bool] = {"max_length": max_length}
        if params.min_new_tokens:
            options["min_length"] = min(max_length, len(prompt_ids) + params.min_new_tokens)
        if params.temperature > 0:
            options.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            if params.top_k:
                options["top_k"] = params.top_k
            if params.seed is not None:
                options["random_seed"] = params.seed
        else:
            options["do_sample"] = False
        if params.repetition_penalty != 1.0:
            options["repetition_penalty"] = params.repetition_penalty
        gp.set_search_options(**options)
        generator = og.Generator(self.model, gp)
        generator.append_tokens(prompt_ids)
        while not generator.is_done():
            generator.generate_next_token()
            yield int(generator.get_next_tokens()[0])

    def sequence_logits(self, ids: list[int]) -> np.ndarray:
        """Next-token logits at every position of `ids`, shape (len(ids), vocab), float32 (quality)."""
        gp = og.GeneratorParams(self.model)
        gp.set_search_options(max_length=len(ids) + 1, do_sample=False)
        generator = og.Generator(self.model, gp)
        generator.append_tokens(ids)
        return np.asarray(generator.get_output("logits"), dtype=np.float32)[0]

    def generate_text(self, prompt: str, params: GenerationParams | None = None, chat: bool = True) -> str:
        text = self.chat_prompt([{"role": "user", "content": prompt}]) if chat else prompt
        return "".join(self.stream(self.encode(text), params or GenerationParams()))
