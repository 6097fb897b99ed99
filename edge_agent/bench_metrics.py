"""Pure metric functions of a bench run (DESIGN.md section 8), shared by `bench` and the device.

They live in the agent because the device summarises its own post-install bench; `bench` imports them.
No timing happens here: callers measure, these functions turn measurements into the record's figures.

Definitions, with one greedy generation of `g` tokens after a prompt of `p` tokens:
- TTFT = request to first generated token (prefill + first sample).
- prefill tok/s = p / prefill time (the prompt's forward pass; TTFT where an engine cannot split it).
- decode tok/s = (g - 1) / (end-to-end - TTFT).
- TPOT = (end-to-end - TTFT) / (g - 1).
- end-to-end tok/s = g / end-to-end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge_agent.contracts.bench_record import Summary

# Which way is better for each metric the records carry: +1 higher is better, -1 lower is better.
DIRECTION: dict[str, int] = {
    "ttft_ms": -1,
    "prefill_tok_s": 1,
    "decode_tok_s": 1,
    "tpot_ms": -1,
    "e2e_tok_s": 1,
    "latency_ms": -1,
    "throughput_tok_s": 1,
    "load_time_s": -1,
    "peak_rss_mb": -1,
    "size_mb": -1,
    "perplexity": -1,
    "kl_divergence": -1,
    "top1_agreement": 1,
}


@dataclass(frozen=True)
class GenerationTiming:
    """One timed generation; times in seconds from the request."""

    prompt_tokens: int
    generated_tokens: int
    ttft_s: float
    total_s: float
    prefill_s: float | None = None  # the prompt's forward pass alone, when the engine can separate it

    def __post_init__(self) -> None:
        if self.generated_tokens < 1 or self.ttft_s <= 0 or self.total_s < self.ttft_s:
            raise ValueError(f"inconsistent timing {self}")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def stddev(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0 for fewer than two values."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def summarize(samples: Iterable[float], unit: str) -> Summary:
    values = [float(v) for v in samples]
    return Summary(
        unit=unit,
        median=percentile(values, 50),
        p90=percentile(values, 90),
        stddev=stddev(values),
        samples=values,
    )


def timing_metrics(t: GenerationTiming) -> dict[str, float]:
    """The per-run figures of one generation; decode figures only when more than one token was made."""
    prefill_s = t.prefill_s if t.prefill_s is not None else t.ttft_s
    out = {
        "ttft_ms": t.ttft_s * 1000.0,
        "prefill_tok_s": t.prompt_tokens / prefill_s,
        "e2e_tok_s": t.generated_tokens / t.total_s,
    }
    if t.generated_tokens > 1 and t.total_s > t.ttft_s:
        after_first = t.total_s - t.ttft_s
        out["decode_tok_s"] = (t.generated_tokens - 1) / after_first
        out["tpot_ms"] = after_first / (t.generated_tokens - 1) * 1000.0
    return out


UNITS = {
    "ttft_ms": "ms",
    "prefill_tok_s": "tok/s",
    "decode_tok_s": "tok/s",
    "tpot_ms": "ms",
    "e2e_tok_s": "tok/s",
    "latency_ms": "ms",
    "throughput_tok_s": "tok/s",
}


def summarize_timings(timings: Sequence[GenerationTiming]) -> dict[str, Summary]:
    """Summaries of every per-run figure over the repetitions (raw samples kept)."""
    per_run = [timing_metrics(t) for t in timings]
    keys = [k for k in UNITS if any(k in r for r in per_run)]
    return {k: summarize([r[k] for r in per_run if k in r], UNITS[k]) for k in keys}


def decode_bound_tok_s(bandwidth_bytes_s: float, weight_bytes_per_token: int) -> float:
    """Physical ceiling of decode: every weight byte crosses the memory bus once per token."""
    if weight_bytes_per_token <= 0:
        raise ValueError("weight bytes per token must be positive")
    return bandwidth_bytes_s / weight_bytes_per_token


def fraction_of_bound(decode_tok_s: float | None, bound_tok_s: float | None) -> float | None:
    if not decode_tok_s or not bound_tok_s:
        return None
    return decode_tok_s / bound_tok_s


def relative_change(new: float, old: float, direction: int) -> float:
    """Signed improvement of `new` over `old` as a fraction of `old`: negative means worse."""
    if old == 0:
        return 0.0
    return direction * (new - old) / abs(old)


__all__ = [
    "DIRECTION",
    "UNITS",
    "GenerationTiming",
    "decode_bound_tok_s",
    "fraction_of_bound",
    "percentile",
    "relative_change",
    "stddev",
    "summarize",
    "summarize_timings",
    "timing_metrics",
]
