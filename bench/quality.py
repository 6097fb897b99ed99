"""Quality of a case against a reference on the same token ids: perplexity, mean KL, top-1 agreement.

Streaming by chunks of positions, so a 2,000-token text with a 49k vocabulary never needs two full
float64 copies of the logits at once. The reference's log-probabilities are kept on disk (.npy,
memory-mapped) between the reference's process and the others'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_agent.contracts.bench_record import Quality

CHUNK = 256


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (small differences between near-identical models survive)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class QualityAccumulator:
    """Sums over predicted positions; position i's distribution predicts token i + 1."""

    nll: float = 0.0
    kl: float = 0.0
    agree: int = 0
    count: int = 0
    has_reference: bool = False
    _seen: list[int] = field(default_factory=list)

    def add(self, logprobs: np.ndarray, targets: np.ndarray, ref_logprobs: np.ndarray | None = None) -> None:
        """logprobs, ref_logprobs: (n, vocab) log-probabilities; targets: (n,) the tokens that followed."""
        lp = np.asarray(logprobs, dtype=np.float64)
        self.nll -= float(lp[np.arange(len(targets)), targets].sum())
        self.count += len(targets)
        if ref_logprobs is not None:
            ref = np.asarray(ref_logprobs, dtype=np.float64)
            self.has_reference = True
            self.kl += float((np.exp(ref) * (ref - lp)).sum())
            self.agree += int((ref.argmax(axis=-1) == lp.argmax(axis=-1)).sum())

    def result(self, reference: str, text: str) -> Quality:
        if not self.count:
            raise ValueError("no positions were scored")
        return Quality(
            reference=reference,
            text=text,
            tokens=self.count,
            perplexity=float(np.exp(self.nll / self.count)),
            kl_divergence=self.kl / self.count if self.has_reference else None,
            top1_agreement=self.agree / self.count if self.has_reference else None,
        )


def score(
    logits: np.ndarray,
    ids: list[int],
    reference: str,
    text: str,
    ref_logprobs_path: Path | None = None,
    save_logprobs_path: Path | None = None,
) -> Quality:
    """Quality of `logits` (len(ids), vocab) for `ids`; compare with and/or save reference log-probs.

    The reference itself scores KL 0 and top-1 1.0 (it is compared with itself).
    """
    n = len(ids) - 1
    targets = np.asarray(ids[1:], dtype=np.int64)
    ref = np.load(ref_logprobs_path, mmap_mode="r") if ref_logprobs_path else None
    if ref is not None and ref.shape[0] != n:
        raise ValueError(f"reference scored {ref.shape[0]} positions, this case {n}")
    out = None
    if save_logprobs_path:
        out = np.lib.format.open_memmap(
            save_logprobs_path, mode="w+", dtype=np.float32, shape=(n, logits.shape[-1])
        )
    acc = QualityAccumulator()
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        lp = log_softmax(logits[start:stop])
        if out is not None:
            out[start:stop] = lp
        ref_chunk = ref[start:stop] if ref is not None else (lp if out is not None else None)
        acc.add(lp, targets[start:stop], ref_chunk)
    if out is not None:
        out.flush()
    return acc.result(reference, text)


__all__ = ["QualityAccumulator", "log_softmax", "score"]
