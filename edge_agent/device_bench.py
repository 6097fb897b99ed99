"""A short bench of the variant a device just installed, as a BenchRecord for the `bench` topic.

The agent calls `run_device_bench` after a SUCCEEDED install when the desired state's
`policy.bench_after_install` asks for it, and publishes the record; `slmops fleet bench` lines devices
up side by side. Same definitions and record as `bench compare` (DESIGN.md section 8), measured
inside the agent's process on the model it serves: no torch, no build side, no extra memory for a
bandwidth probe. Peak RSS is therefore the agent's own peak so far, model included, and `rss_mb`
what the process holds with the model loaded once the runs end: what the device pays to serve it.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from edge_agent.bench_metrics import GenerationTiming, summarize_timings
from edge_agent.contracts.bench_record import BenchMeta, BenchRecord
from edge_agent.memory import peak_rss_mb, rss_mb
from edge_agent.runtime import GenerationParams, LoadedModel

# A fixed prose prompt: the same ids every time on a given tokenizer, repeated to the asked length.
DEVICE_PROMPT = (
    "The lighthouse keeper climbed the spiral stairs before dawn, trimmed the wick, polished the lens "
    "and wound the clockwork that turned the light, so that ships far out at sea could tell the "
    "headland from the rocks by the rhythm of its flash. "
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def time_generation(model: LoadedModel, prompt_ids: list[int], n_tokens: int) -> GenerationTiming:
    """One greedy generation of exactly n_tokens, timed from the request to each token."""
    params = GenerationParams(max_new_tokens=n_tokens, min_new_tokens=n_tokens)
    start = time.perf_counter()
    tokens = model.token_ids(prompt_ids, params)
    next(tokens)  # the prompt's forward pass and the first sample
    first = time.perf_counter()
    count = 1 + sum(1 for _ in tokens)
    end = time.perf_counter()
    return GenerationTiming(len(prompt_ids), count, first - start, end - start)


def fixed_prompt_ids(model: LoadedModel, n: int) -> list[int]:
    ids = model.encode(DEVICE_PROMPT)
    return (ids * (-(-n // len(ids))))[:n]


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def run_device_bench(
    model: LoadedModel,
    *,
    model_ref: str,
    variant: str,
    device: str | None = None,
    precision: str | None = None,
    prompt_tokens: int = 64,
    gen_tokens: int = 32,
    warmup: int = 1,
    repetitions: int = 3,
    budget_s: float | None = 60.0,
    load_time_s: float | None = None,
) -> BenchRecord:
    """Warm-up, then up to `repetitions` timed runs (at least one; fewer when `budget_s` runs out)."""
    prompt = fixed_prompt_ids(model, prompt_tokens)
    start = time.monotonic()
    for _ in range(warmup):
        time_generation(model, prompt, gen_tokens)
    timings = []
    for _ in range(repetitions):
        timings.append(time_generation(model, prompt, gen_tokens))
        if budget_s is not None and time.monotonic() - start > budget_s:
            break
    return BenchRecord(
        model=model_ref,
        variant=variant,
        engine="onnxruntime-genai",
        provider=model.provider,
        scenario=f"pp{prompt_tokens}-tg{gen_tokens}",
        meta=BenchMeta(
            packages=package_versions(("onnxruntime-genai", "onnxruntime")),
            cpu_model=cpu_model(),
            cores=os.cpu_count() or 0,
            threads=model.threads,
            precision=precision,
            prompt_tokens=prompt_tokens,
            generation_tokens=gen_tokens,
            warmup=warmup,
            repetitions=len(timings),
            device=device,
            host=socket.gethostname(),
        ),
        load_time_s=load_time_s,
        size_bytes=folder_size(model.variant_dir),
        peak_rss_mb=peak_rss_mb(),
        rss_mb=rss_mb(),
        metrics=summarize_timings(timings),
    )


__all__ = ["cpu_model", "run_device_bench", "time_generation"]
