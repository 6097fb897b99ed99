"""Teachers: whatever turns a batch of prompts into answers. One method, two kinds.

`TransformersTeacher` runs a local model (batched, left-padded, greedy or sampled);
`OpenAITeacher` calls any OpenAI-compatible endpoint (an `edge-agent`, vLLM, a hosted model), one
request per prompt, `batch_size` of them at a time. Both report whether an answer ended with EOS or
ran into the token limit, which validation needs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from build_side.distill.config import GenerationSettings
from edge_agent.errors import DistillError


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: Literal["stop", "length"]
    output_tokens: int | None
    token_ids: list[int] | None = None  # generated ids, EOS included when it stopped
    topk_ids: list[list[int]] | None = None  # per generated position, the k most likely ids
    topk_logprobs: list[list[float]] | None = None  # and their log-probs (temperature 1)


class Teacher(Protocol):
    def describe(self) -> dict[str, Any]:
        """Who answered: stored in every record."""
        ...

    def complete(self, prompts: list[str], settings: GenerationSettings) -> list[Completion]:
        """Answers in the order of `prompts`."""
        ...


class TransformersTeacher:
    """A local causal LM in transformers. Also the batched greedy generator the report uses."""

    def __init__(
        self, model_dir: Path, info: dict[str, Any] | None = None, threads: int | None = None
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.model_dir = Path(model_dir)
        self.info = info or {"source": str(model_dir)}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self.model = AutoModelForCausalLM.from_pretrained(self.model_dir).eval()
        except (OSError, ValueError) as exc:
            raise DistillError(f"{model_dir}: cannot load the teacher ({exc})") from exc
        self.tokenizer.padding_side = "left"  # new tokens follow every prompt directly
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])

    def describe(self) -> dict[str, Any]:
        return {"kind": "transformers", **self.info}

    def complete(self, prompts: list[str], settings: GenerationSettings) -> list[Completion]:
        import torch

        from build_side.distill.data import format_prompt

        formatted = [format_prompt(self.tokenizer, p, settings.chat, settings.system) for p in prompts]
        templated = formatted[0][1]
        texts = [text for text, _ in formatted]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not templated)
        sample = settings.temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "do_sample": sample}
        if sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
            torch.manual_seed(settings.seed)
        if settings.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = settings.repetition_penalty
        k = settings.top_logprobs
        if k:  # the raw logits of every step (no processors run on greedy defaults)
            kwargs.update(output_logits=True, return_dict_in_generate=True)
        with torch.inference_mode():
            out = self.model.generate(
                **enc, **kwargs, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=sorted(self.eos_ids)
            )
        sequences = out.sequences if k else out
        new = sequences[:, enc["input_ids"].shape[1] :]  # (batch, generated), padded after EOS
        top = None
        if k:  # (batch, steps, k) ids and log-probs
            logp = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)
            top = torch.topk(logp, k, dim=-1)
        results = []
        for b, row in enumerate(new.tolist()):
            end = next((i for i, t in enumerate(row) if t in self.eos_ids), None)
            kept = row if end is None else row[:end]
            text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
            finish: Literal["stop", "length"] = "length" if end is None else "stop"
            n = len(kept) + (0 if end is None else 1)
            extra: dict[str, Any] = {}
            if top is not None:
                extra = {
                    "token_ids": row[:n],
                    "topk_ids": top.indices[b, :n].tolist(),
                    "topk_logprobs": [[round(v, 4) for v in r] for r in top.values[b, :n].tolist()],
                }
            results.append(Completion(text, finish, n, **extra))
        return results


def _v1_url(url: str) -> str:
    """`http://host:port` means the usual `/v1` prefix; any other path is taken as given."""
    parts = urlsplit(url)
    return url.rstrip("/") + "/v1" if parts.path in ("", "/") else url.rstrip("/")


class _Malformed(Exception):
    """An HTTP 200 whose body is not an answer."""


class OpenAITeacher:
    """Any OpenAI-compatible endpoint; requests run `batch_size` at a time."""

    def __init__(
        self, url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0, retries: int = 2
    ) -> None:
        from openai import OpenAI

        self.url = _v1_url(url)
        self.model = model
        self.retries = retries  # further tries per prompt after a timeout, an error or a malformed answer
        # what went wrong, by kind, over every try: "timeout", "error", "malformed" (and "gave_up")
        self.failures: dict[str, int] = {}
        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        self.client = OpenAI(base_url=self.url, api_key=key, timeout=timeout_s, max_retries=0)

    def describe(self) -> dict[str, Any]:
        return {"kind": "openai", "url": self.url, "model": self.model}

    def complete(self, prompts: list[str], settings: GenerationSettings) -> list[Completion | None]:
        """Answers in order; None for a prompt that failed every try (counted in `failures`; not
        written, so the next run asks again). A batch that fails entirely is the endpoint down: an error."""
        with ThreadPoolExecutor(max_workers=settings.batch_size) as pool:
            answers = list(pool.map(lambda p: self._bounded(p, settings), prompts))
        if answers and all(a is None for a in answers):
            raise DistillError(
                f"teacher endpoint {self.url} (model {self.model}) failed every prompt of a batch after "
                f"{self.retries + 1} tries each ({self._counts()}): {self._last}"
            )
        return answers

    _last: str = ""

    def _counts(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "none"

    def _count(self, kind: str, detail: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1
        self._last = detail

    def _bounded(self, prompt: str, settings: GenerationSettings) -> Completion | None:
        import openai

        for _ in range(self.retries + 1):
            try:
                return self._one(prompt, settings)
            except openai.APITimeoutError as exc:
                self._count("timeout", str(exc))
            except openai.OpenAIError as exc:
                self._count("error", str(exc))
            except _Malformed as exc:
                self._count("malformed", str(exc))
        self._count("gave_up", self._last)
        return None

    def _one(self, prompt: str, settings: GenerationSettings) -> Completion:

        common: dict[str, Any] = {
            "model": self.model,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "seed": settings.seed,
        }
        if settings.repetition_penalty != 1.0:  # not OpenAI's, but vLLM and others read it
            common["extra_body"] = {"repetition_penalty": settings.repetition_penalty}
        if settings.chat:
            messages = [{"role": "system", "content": settings.system}] if settings.system else []
            messages.append({"role": "user", "content": prompt})
            resp = self.client.chat.completions.create(messages=messages, **common)
        else:
            resp = self.client.completions.create(prompt=prompt, **common)
        choices = getattr(resp, "choices", None)
        if not choices:
            raise _Malformed(f"teacher endpoint {self.url} returned no choices")
        choice = choices[0]
        text = choice.message.content if settings.chat else choice.text
        if not isinstance(text, str):
            raise _Malformed(f"teacher endpoint {self.url} returned an answer without text")
        finish: Literal["stop", "length"] = "length" if resp.choices[0].finish_reason == "length" else "stop"
        tokens = resp.usage.completion_tokens if resp.usage else None
        return Completion(text.strip(), finish, tokens)


def open_teacher(
    source: str | Path | None = None,
    url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    threads: int | None = None,
) -> Teacher:
    """A local model source (prepared and cached first), or an endpoint URL with a model name."""
    if url:
        if not model:
            raise DistillError("an endpoint teacher needs the model name it serves (--teacher-model)")
        return OpenAITeacher(url, model, api_key=api_key)
    if source is None:
        raise DistillError("give a teacher: a model source, or an endpoint URL and model name")
    from build_side.sources import prepare

    prepared = prepare(source)
    return TransformersTeacher(
        prepared.path, info={"source": str(source), "sha256": prepared.sha256}, threads=threads
    )
