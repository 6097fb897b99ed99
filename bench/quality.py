"""Quality of a case against a reference on the same token ids: perplexity, mean KL, top-1 agreement.

The arithmetic and the windowing are edge_agent.evaluation's (the same code that fills a bundle's
`eval` block at convert time), so bench and the manifest agree on the same text. What bench adds is
the hand-over between processes: the reference case writes its logits to a .npy file and every
other case reads them back memory-mapped, window by window.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_agent.contracts.bench_record import Quality
from edge_agent.evaluation import WindowSums, token_windows, window_sums

WINDOW = 512  # tokens per window, each starting fresh (as evaluation.evaluate_quality does)


def score_windows(
    logits_of: Callable[[list[int]], np.ndarray],
    ids: list[int],
    reference: str,
    text: str,
    ref_logits_path: Path | None = None,
    save_logits_path: Path | None = None,
    window: int = WINDOW,
) -> Quality:
    """Score `logits_of` (ids -> (len(ids), vocab) logits) on `ids`, window by window.

    With `save_logits_path` this case is the reference: its logits are saved, KL is 0 and top-1 is 1.
    With `ref_logits_path` it is compared with the saved reference; with neither, perplexity only.
    """
    windows = list(token_windows(ids, window))
    positions = sum(len(w) - 1 for w in windows)
    ref = np.load(ref_logits_path, mmap_mode="r") if ref_logits_path else None
    if ref is not None and ref.shape[0] != positions:
        raise ValueError(f"the reference scored {ref.shape[0]} positions, this case {positions}")
    saved = None
    sums = WindowSums()
    pos = 0
    for chunk in windows:
        logits = np.asarray(logits_of(chunk)[:-1], dtype=np.float32)
        k = logits.shape[0]
        if save_logits_path is not None:
            if saved is None:
                shape = (positions, logits.shape[1])
                saved = np.lib.format.open_memmap(save_logits_path, mode="w+", dtype=np.float32, shape=shape)
            saved[pos : pos + k] = logits
        sums += window_sums(logits, np.asarray(chunk[1:]), None if ref is None else ref[pos : pos + k])
        pos += k
    if saved is not None:
        saved.flush()
    compared = ref is not None or save_logits_path is not None
    return Quality(
        reference=reference,
        text=text,
        tokens=sums.tokens,
        perplexity=sums.perplexity,
        kl_divergence=sums.kl_divergence if ref is not None else (0.0 if compared else None),
        top1_agreement=sums.top1_agreement if compared else None,
    )


__all__ = ["WINDOW", "score_windows"]
