"""Run one model variant on onnxruntime-genai: load with a chosen execution provider, generate text.

This is the only module that touches onnxruntime_genai; the health gate, the API server and bench
all go through it. One `LoadedModel` serves many requests at once: each `generate()` call makes its
own `og.Generator`, and LoRA adapters are picked per generation.
onnxruntime-genai (and with it onnxruntime) is imported when the first model loads, numpy only by
`sequence_logits`: importing this module (the API's types do) keeps the agent at rest light.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.contracts import GenerationDefaults
from edge_agent.errors import (
    ContextLengthError,
    IncompatibleError,
    ModelRuntimeError,
    ProviderUnavailableError,
    RequestError,
    UnknownAdapterError,
)

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime_genai as og

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
    temperature: float = 0.0  # 0 is greedy
    top_p: float = 1.0
    top_k: int | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None
    min_new_tokens: int = 0  # > 0 suppresses end-of-sequence until then (fixed-length benchmarks)
    stop: tuple[str, ...] = ()  # generation ends before the first of these strings; it is not returned
    adapter: str | None = None  # LoRA adapter name loaded on the model

    @classmethod
    def from_defaults(cls, defaults: GenerationDefaults, **overrides: object) -> GenerationParams:
        """The bundle's defaults, then whatever the request set (None means 'not set')."""
        params = cls(
            temperature=defaults.temperature,
            top_p=defaults.top_p,
            top_k=defaults.top_k,
            repetition_penalty=defaults.repetition_penalty,
        )
        return replace(params, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class Generation:
    """One running generation: iterate it for text deltas; counts and timings fill in as it goes.

    `cancel()` is safe from any thread; the token loop checks it before each step, so a client that
    went away stops costing compute within one token.
    """

    prompt_tokens: int
    max_new_tokens: int
    completion_tokens: int = 0
    finish_reason: str | None = None  # "stop", "length" or "cancelled"
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _pieces: Iterator[str] | None = field(default=None, repr=False)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def decode_tok_s(self) -> float | None:
        """Generated tokens after the first / time after the first token (DESIGN.md section 8)."""
        if self.first_token_at is None or self.finished_at is None or self.completion_tokens < 2:
            return None
        elapsed = self.finished_at - self.first_token_at
        return (self.completion_tokens - 1) / elapsed if elapsed > 0 else None

    def __iter__(self) -> Iterator[str]:
        assert self._pieces is not None, "Generation objects come from LoadedModel.generate()"
        return self._pieces


class LoadedModel:
    """One variant loaded with one execution provider, plus the LoRA adapters loaded on it."""

    def __init__(
        self,
        variant_dir: Path,
        provider: str = "CPUExecutionProvider",
        threads: int | None = None,
        session_options: dict[str, Any] | None = None,
    ) -> None:
        self.variant_dir = Path(variant_dir)
        self.provider = provider
        self.threads = threads
        if provider not in GENAI_PROVIDER_NAMES:
            raise ProviderUnavailableError(
                f"execution provider {provider!r} is not supported by this runtime"
            )
        import onnxruntime_genai as og

        session = dict(session_options or {})
        if threads:
            session.update(intra_op_num_threads=threads, inter_op_num_threads=1)
        try:
            config = og.Config(str(self.variant_dir))
        except Exception as exc:  # onnxruntime-genai raises plain RuntimeError/Exception for every failure
            raise ModelRuntimeError(f"{self.variant_dir}: could not load with {provider}: {exc}") from exc
        if session:
            _overlay_session_options(config, session)
        try:
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
        eos = genai_config["model"].get("eos_token_id", [])
        self.eos_token_ids = set(eos if isinstance(eos, list) else [eos])
        self._adapters: og.Adapters | None = None
        self.adapter_names: list[str] = []
        self._added: re.Pattern[str] | None = None  # the tokenizer's added tokens, read on first use

    def load_adapter(self, name: str, path: Path) -> None:
        """Load a `.onnx_adapter` file under `name`; requests pick it with `GenerationParams.adapter`."""
        import onnxruntime_genai as og

        try:
            if self._adapters is None:
                self._adapters = og.Adapters(self.model)
            self._adapters.load(str(path), name)
        except Exception as exc:
            raise ModelRuntimeError(f"{path}: could not load adapter {name!r}: {exc}") from exc
        self.adapter_names.append(name)

    def chat_prompt(self, messages: list[dict[str, str]], template: str | None = None) -> str:
        """The model's chat template (or `template`, a jinja string) applied, ready for the reply."""
        try:
            return self.tokenizer.apply_chat_template(
                json.dumps(messages), template_str=template, add_generation_prompt=True
            )
        except Exception as exc:
            raise RequestError(f"the chat template rejected these messages: {exc}", "messages") from exc

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special tokens written in it are honoured (a prompt the caller owns)."""
        return [int(t) for t in self.tokenizer.encode(text)]

    def encode_text(self, text: str) -> list[int]:
        """Token ids of `text` as plain text: a special token's string in it (`<|im_start|>`) is
        encoded as the characters it is made of, never as the special token."""
        ids: list[int] = []
        pattern = self._added_tokens_pattern()
        pieces = pattern.split(text) if pattern else [text]
        for i, piece in enumerate(pieces):
            if not piece:
                continue
            if i % 2:  # a special token's string: its first character apart breaks the match
                ids += self.encode(piece[0]) + self.encode(piece[1:])
            else:
                ids += self.encode(piece)
        return ids

    def chat_prompt_ids(self, messages: list[dict[str, str]], template: str | None = None) -> list[int]:
        """The chat prompt as token ids, the template's own markup as special tokens and every
        message's content as text, so a caller cannot forge a role boundary inside a message."""
        marks = [f"\ue000{i}\ue001" for i in range(len(messages))]  # private-use characters
        text = self.chat_prompt(
            [{**m, "content": mark} for m, mark in zip(messages, marks, strict=True)], template
        )
        ids: list[int] = []
        pos = 0
        for message, mark in zip(messages, marks, strict=True):
            at = text.find(mark, pos)
            if at < 0:  # this template leaves the message out
                continue
            ids += self.encode(text[pos:at]) if at > pos else []
            ids += self.encode_text(message["content"])
            pos = at + len(mark)
        return ids + (self.encode(text[pos:]) if pos < len(text) else [])

    def _added_tokens_pattern(self) -> re.Pattern[str] | None:
        if self._added is None:
            try:
                data = json.loads((self.variant_dir / "tokenizer.json").read_text())
                tokens = [t["content"] for t in data.get("added_tokens", []) if len(t.get("content", "")) > 1]
            except (OSError, ValueError, KeyError, TypeError):
                tokens = []
            tokens.sort(key=len, reverse=True)
            self._added = re.compile("(" + "|".join(map(re.escape, tokens)) + ")") if tokens else None
        return self._added

    def generate(self, prompt_ids: list[int], params: GenerationParams) -> Generation:
        """Check the request against the model, then return a lazy `Generation` (runs as it is iterated)."""
        if not prompt_ids:
            raise RequestError("the prompt is empty", "prompt")
        if params.adapter is not None and params.adapter not in self.adapter_names:
            raise UnknownAdapterError(f"this model has no adapter {params.adapter!r}", "model")
        room = self.context_length - len(prompt_ids)
        if room < 1 or params.max_new_tokens > room:
            raise ContextLengthError(
                f"this model's context is {self.context_length} tokens; the prompt has {len(prompt_ids)} "
                f"and {params.max_new_tokens} more were requested",
                "max_tokens" if room >= 1 else "messages",
            )
        gen = Generation(prompt_tokens=len(prompt_ids), max_new_tokens=params.max_new_tokens)
        gen._pieces = self._run(gen, prompt_ids, params)
        return gen

    def _run(self, gen: Generation, prompt_ids: list[int], params: GenerationParams) -> Iterator[str]:
        try:
            generator = self._generator(prompt_ids, params)
        except Exception as exc:
            raise ModelRuntimeError(f"generation failed to start: {exc}") from exc
        decoder = self.tokenizer.create_stream()
        stops = _StopMatcher(params.stop)
        try:
            while not gen.cancelled:
                if generator.is_done():
                    gen.finish_reason = "length" if gen.completion_tokens >= params.max_new_tokens else "stop"
                    break
                generator.generate_next_token()
                token = int(generator.get_next_tokens()[0])
                gen.completion_tokens += 1
                if gen.first_token_at is None:
                    gen.first_token_at = time.perf_counter()
                if token in self.eos_token_ids:
                    continue
                text, hit = stops.feed(decoder.decode(token))
                if text:
                    yield text
                if hit:
                    gen.finish_reason = "stop"
                    break
            else:
                gen.finish_reason = "cancelled"
            tail = stops.flush()
            if tail and not stops.hit and gen.finish_reason != "cancelled":
                yield tail
        except RequestError:
            raise
        except Exception as exc:
            raise ModelRuntimeError(f"generation failed: {exc}") from exc
        finally:
            gen.finished_at = time.perf_counter()
            if gen.finish_reason is None:  # the consumer stopped iterating early
                gen.finish_reason = "cancelled"

    def _generator(self, prompt_ids: list[int], params: GenerationParams) -> og.Generator:
        import onnxruntime_genai as og

        gp = og.GeneratorParams(self.model)
        options: dict[str, float | int | bool] = {"max_length": len(prompt_ids) + params.max_new_tokens}
        if params.min_new_tokens:
            options["min_length"] = len(prompt_ids) + min(params.min_new_tokens, params.max_new_tokens)
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
        if params.adapter is not None:
            generator.set_active_adapter(self._adapters, params.adapter)
        generator.append_tokens(prompt_ids)
        return generator

    def stream(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[str]:
        """Yield decoded text pieces as they are generated."""
        yield from self.generate(prompt_ids, params)

    def token_ids(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[int]:
        """Yield generated token ids one at a time (the prompt runs before the first one); the token
        budget is clamped to the context rather than refused (bench)."""
        room = max(1, self.context_length - len(prompt_ids))
        generator = self._generator(
            prompt_ids, replace(params, max_new_tokens=min(params.max_new_tokens, room))
        )
        while not generator.is_done():
            generator.generate_next_token()
            yield int(generator.get_next_tokens()[0])

    def sequence_logits(self, ids: list[int]) -> np.ndarray:
        """Next-token logits at every position of `ids`, shape (len(ids), vocab), float32 (quality).

        A graph built with `prune_lm_head` computes logits for the last position only (what serving
        needs); there the ids go in one at a time, each step giving its position's logits."""
        import numpy as np
        import onnxruntime_genai as og

        gp = og.GeneratorParams(self.model)
        gp.set_search_options(max_length=len(ids) + 1, do_sample=False)
        generator = og.Generator(self.model, gp)
        generator.append_tokens(ids)
        logits = np.asarray(generator.get_output("logits"), dtype=np.float32)[0]
        if logits.shape[0] == len(ids):
            return logits
        gp = og.GeneratorParams(self.model)
        gp.set_search_options(max_length=len(ids) + 1, do_sample=False)
        generator = og.Generator(self.model, gp)
        rows = []
        for token in ids:
            generator.append_tokens([token])
            rows.append(np.asarray(generator.get_output("logits"), dtype=np.float32)[0, -1])
        return np.stack(rows)

    def generate_text(self, prompt: str, params: GenerationParams | None = None, chat: bool = True) -> str:
        text = self.chat_prompt([{"role": "user", "content": prompt}]) if chat else prompt
        return "".join(self.stream(self.encode(text), params or GenerationParams()))


def _overlay_session_options(config: og.Config, options: dict[str, Any]) -> None:
    """Apply decoder session options; one the installed onnxruntime-genai does not know is an error
    that names it and the version (string values it passes on to onnxruntime as config entries)."""
    import onnxruntime_genai as og

    try:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    except Exception as exc:
        text = str(exc)
        named = [k for k in options if f'"{k}"' in text or f"session_options:{k}" in text]
        what = f"session option {named[0]!r}" if named else f"session options {sorted(options)}"
        raise IncompatibleError(
            f"onnxruntime-genai {og.__version__} does not accept the {what}: {text}"
        ) from exc


class _StopMatcher:
    """Holds back text that could be the start of a stop string, so a stop string is never emitted."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.buffer = ""
        self.hit = False

    def feed(self, piece: str) -> tuple[str, bool]:
        """Returns (text safe to emit now, whether a stop string was reached)."""
        if not self.stops:
            return piece, False
        self.buffer += piece
        found = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit = True
            text, self.buffer = self.buffer[: min(found)], ""
            return text, True
        hold = max((_overlap(self.buffer, s) for s in self.stops), default=0)
        text = self.buffer[: len(self.buffer) - hold]
        self.buffer = self.buffer[len(self.buffer) - hold :]
        return text, False

    def flush(self) -> str:
        text, self.buffer = self.buffer, ""
        return text


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
