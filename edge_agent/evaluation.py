"""How far a model variant drifts from its full-precision reference, measured on a held-out text.

The metrics are pure numpy over next-token logits (DESIGN.md section 8):
- perplexity: exp of the mean negative log-likelihood of the text's next tokens;
- KL divergence: mean over positions of KL(reference || variant) of the next-token distributions;
- top-1 agreement: the share of positions where both pick the same most likely token.
The text is cut into fixed windows that each start fresh, so every variant sees exactly the same work.
Logits come from onnxruntime-genai through `edge_agent.runtime.LoadedModel.sequence_logits`, so the
build side (at convert time) and bench measure with the same code the device runs. No torch here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_agent.contracts import VariantEval

ROWS_PER_SLICE = 128  # bounds the float64 temporaries to ~ROWS * vocab * 8 bytes


class LogitsModel(Protocol):
    """What the evaluation needs from a model: its tokenizer and all-position logits."""

    def encode(self, text: str) -> list[int]: ...

    def sequence_logits(self, ids: list[int]) -> np.ndarray: ...


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (shape (T, V) in, same shape out)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class WindowSums:
    """Running sums over positions; add windows, then read the means."""

    tokens: int = 0
    nll: float = 0.0
    kl: float = 0.0
    agree: int = 0

    def __iadd__(self, other: WindowSums) -> WindowSums:
        self.tokens += other.tokens
        self.nll += other.nll
        self.kl += other.kl
        self.agree += other.agree
        return self

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.nll / self.tokens)) if self.tokens else float("nan")

    @property
    def kl_divergence(self) -> float:
        return self.kl / self.tokens if self.tokens else float("nan")

    @property
    def top1_agreement(self) -> float:
        return self.agree / self.tokens if self.tokens else float("nan")


def window_sums(logits: np.ndarray, targets: np.ndarray, reference: np.ndarray | None = None) -> WindowSums:
    """Sums for one window. `logits[i]` predicts `targets[i]`; `reference` is the reference's logits
    at the same positions (None: compare with itself, KL 0 and full agreement)."""
    logits = np.asarray(logits)
    targets = np.asarray(targets, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[0] != targets.shape[0]:
        raise ValueError(f"logits {logits.shape} do not match {targets.shape[0]} targets")
    if reference is not None and np.shape(reference) != logits.shape:
        raise ValueError(f"reference logits {np.shape(reference)} differ from {logits.shape}")
    sums = WindowSums(tokens=int(targets.shape[0]))
    for start in range(0, logits.shape[0], ROWS_PER_SLICE):
        rows = slice(start, start + ROWS_PER_SLICE)
        lq = log_softmax(logits[rows])
        sums.nll -= float(lq[np.arange(lq.shape[0]), targets[rows]].sum())
        if reference is None:
            sums.agree += lq.shape[0]
            continue
        lp = log_softmax(reference[rows])
        sums.kl += float((np.exp(lp) * (lp - lq)).sum())
        sums.agree += int((lp.argmax(axis=-1) == lq.argmax(axis=-1)).sum())
    return sums


def token_windows(ids: list[int], window: int, max_tokens: int | None = None) -> Iterator[list[int]]:
    """Consecutive non-overlapping windows of `window` tokens (a short tail of < 2 tokens is dropped)."""
    if window < 2:
        raise ValueError("a window needs at least 2 tokens")
    ids = ids[:max_tokens] if max_tokens else ids
    for start in range(0, len(ids), window):
        chunk = ids[start : start + window]
        if len(chunk) >= 2:
            yield chunk


@dataclass(frozen=True)
class QualityReport:
    tokens: int  # positions scored (each window's first token has no prediction)
    perplexity: float
    reference_perplexity: float
    kl_divergence: float
    top1_agreement: float

    @property
    def perplexity_ratio(self) -> float:
        return self.perplexity / self.reference_perplexity


def evaluate_quality(
    reference: LogitsModel,
    candidates: Mapping[str, LogitsModel],
    text: str,
    window: int = 512,
    max_tokens: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[QualityReport, dict[str, QualityReport]]:
    """Score the reference and every candidate on `text`, window by window, so only one window of
    logits per model is held in memory. Returns (reference's own report, {name: report}).
    `progress(done, total)` is called after each window."""
    chunks = list(token_windows(reference.encode(text), window, max_tokens))
    ref_sums = WindowSums()
    cand_sums = {name: WindowSums() for name in candidates}
    for done, chunk in enumerate(chunks, 1):
        targets = np.asarray(chunk[1:])
        ref_logits = reference.sequence_logits(chunk)[:-1]
        ref_sums += window_sums(ref_logits, targets)
        for name, model in candidates.items():
            cand_sums[name] += window_sums(model.sequence_logits(chunk)[:-1], targets, ref_logits)
        if progress:
            progress(done, len(chunks))
    if not ref_sums.tokens:
        raise ValueError("the evaluation text is too short: it has fewer than 2 tokens")
    ref_ppl = ref_sums.perplexity

    def report(s: WindowSums, is_reference: bool = False) -> QualityReport:
        return QualityReport(
            tokens=s.tokens,
            perplexity=s.perplexity,
            reference_perplexity=ref_ppl,
            kl_divergence=0.0 if is_reference else s.kl_divergence,
            top1_agreement=1.0 if is_reference else s.top1_agreement,
        )

    return report(ref_sums, True), {name: report(s) for name, s in cand_sums.items()}


class StreamingModel(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def stream(self, prompt_ids: list[int], params: object) -> Iterator[str]: ...


def decode_tokens_per_second(model: StreamingModel, params: object, prompt: str) -> float | None:
    """Decode speed of one greedy run: tokens after the first / time after the first (section 8).
    None when the model stopped before producing two tokens."""
    count, first_at = 0, None
    for _ in model.stream(model.encode(prompt), params):
        count += 1
        if first_at is None:
            first_at = time.perf_counter()
    if first_at is None or count < 2:
        return None
    elapsed = time.perf_counter() - first_at
    return (count - 1) / elapsed if elapsed > 0 else None


def size_on_disk(path: Path) -> int:
    """Bytes of every regular file under `path` (what a device downloads and stores)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def text_label(name: str, text: str) -> str:
    """`heldout.txt@sha256:<12 hex>`: which text, pinned by content."""
    return f"{name}@sha256:{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def to_variant_eval(
    report: QualityReport,
    reference: str,
    text: str,
    size_bytes: int,
    decode_tok_s: float | None = None,
) -> VariantEval:
    """The manifest's `eval` block, rounded to figures worth printing."""
    return VariantEval(
        reference=reference,
        text=text,
        tokens=report.tokens,
        perplexity=round(report.perplexity, 4),
        reference_perplexity=round(report.reference_perplexity, 4),
        perplexity_ratio=round(report.perplexity_ratio, 4),
        kl_divergence=round(report.kl_divergence, 6),
        top1_agreement=round(report.top1_agreement, 4),
        size_bytes=size_bytes,
        decode_tok_s=None if decode_tok_s is None else round(decode_tok_s, 1),
    )


__all__ = [
    "LogitsModel",
    "QualityReport",
    "WindowSums",
    "decode_tokens_per_second",
    "evaluate_quality",
    "log_softmax",
    "size_on_disk",
    "text_label",
    "to_variant_eval",
    "token_windows",
    "window_sums",
]
