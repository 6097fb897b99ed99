"""Bench record (`slmops.bench/1`): one (model, variant, provider, scenario) measurement, comparable later.

Definitions (DESIGN.md section 8): TTFT is request to first generated token; prefill tok/s is prompt
tokens / prefill time; decode tok/s is tokens after the first / time after the first; TPOT is
(end-to-end - TTFT) / (generated - 1).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from edge_agent.contracts.common import Contract, utcnow

BENCH_SCHEMA = "slmops.bench/1"


class Summary(Contract):
    unit: str
    median: float
    p90: float
    stddev: float
    samples: list[float] = Field(default_factory=list)


class Quality(Contract):
    reference: str
    text: str
    tokens: int
    perplexity: float
    kl_divergence: float | None = None
    top1_agreement: float | None = None


class BenchMeta(Contract):
    packages: dict[str, str] = Field(default_factory=dict)
    cpu_model: str = ""
    cores: int = 0
    threads: int | None = None
    precision: str | None = None
    quantization: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    prompt_tokens: int = 0
    generation_tokens: int = 0
    warmup: int = 0
    repetitions: int = 0
    device: str | None = Field(None, description="edge device id when measured by an agent")
    host: str = ""


class BenchRecord(Contract):
    schema_: Literal["slmops.bench/1"] = Field(BENCH_SCHEMA, alias="schema")
    time: datetime = Field(default_factory=utcnow)
    model: str = Field(description="bundle name@version, folder or source it measured")
    variant: str
    engine: str = Field(description="onnxruntime-genai, pytorch, llama.cpp, agent-api, ...")
    provider: str
    scenario: str = Field(description="e.g. pp128-tg128, chat")
    meta: BenchMeta = Field(default_factory=BenchMeta)
    load_time_s: float | None = None
    size_bytes: int | None = None
    store_bytes: int | None = Field(
        None, description="disk the device's model store used when measured (shared files once)"
    )
    peak_rss_mb: float | None = None
    rss_mb: float | None = Field(
        None,
        description="resident memory of the process running the model, model loaded, when the runs "
        "ended (MiB): what a device pays to serve it",
    )
    metrics: dict[str, Summary] = Field(
        default_factory=dict,
        description="ttft_ms, prefill_tok_s, decode_tok_s, tpot_ms, e2e_tok_s, ...",
    )
    quality: Quality | None = None
    decode_bound_tok_s: float | None = Field(None, description="memory bandwidth / weight bytes per token")
    error: str | None = None


__all__ = ["BENCH_SCHEMA", "BenchMeta", "BenchRecord", "Quality", "Summary"]
