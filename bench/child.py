"""One case in its own process: `python -m bench.child JOB.json RESULT.json`.

Own process per case so peak RSS belongs to that case alone and one engine's threads, allocator or
crash never touches another's figures. Progress goes to stdout as JSON lines for the parent's bar.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bench.cases import CaseSpec, Scenario
from bench.engines import Engine, EngineInfo, engine_class
from bench.quality import score_windows
from edge_agent.bench_metrics import GenerationTiming, decode_bound_tok_s, summarize, summarize_timings
from edge_agent.contracts.bench_record import BenchMeta, BenchRecord, Quality, Summary
from edge_agent.device_bench import cpu_model, peak_rss_mb
from edge_agent.errors import SlmopsError


class QualityJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[int] = Field(min_length=2)
    text: str = Field(description="name of the text with its sha256 prefix")
    reference: str = Field(description="label of the reference case")
    reference_logits: Path | None = None
    save_logits: Path | None = None


class CaseJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["run", "tokenize"] = "run"
    case: CaseSpec
    scenarios: list[Scenario] = Field(default_factory=list)
    warmup: int = Field(1, ge=0)
    repetitions: int = Field(3, ge=1)
    quality: QualityJob | None = None
    bandwidth: Summary | None = None
    texts: dict[str, str] = Field(default_factory=dict)
    chats: list[list[dict[str, str]]] = Field(default_factory=list)


class CaseResult(BaseModel):
    records: list[BenchRecord] = Field(default_factory=list)
    tokens: dict[str, list[int]] = Field(default_factory=dict)
    chat_ids: list[list[int]] = Field(default_factory=list)
    error: str | None = None


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


def run_scenario(engine: Engine, scenario: Scenario, warmup: int, repetitions: int) -> list[GenerationTiming]:
    for _ in range(warmup):
        engine.generate(scenario.prompts[0], scenario.gen_tokens)
        emit(event="step", what=f"{scenario.name} warm-up")
    timings = []
    for rep in range(repetitions):
        for prompt in scenario.prompts:
            timings.append(engine.generate(prompt, scenario.gen_tokens))
        emit(event="step", what=f"{scenario.name} {rep + 1}/{repetitions}")
    return timings


def make_record(
    job: CaseJob,
    scenario: Scenario,
    timings: list[GenerationTiming],
    info: EngineInfo,
    load_time_s: float,
    rss_mb: float,
    quality: Quality | None,
) -> BenchRecord:
    case = job.case
    prompt_lengths = [len(p) for p in scenario.prompts]
    bound = None
    if job.bandwidth:
        bound = decode_bound_tok_s(job.bandwidth.median * 1e9, info.weight_bytes_per_token)
    metrics = summarize_timings(timings)
    # The bound's two inputs travel with it, so a reader can check it.
    metrics["weight_mb_per_token"] = summarize([info.weight_bytes_per_token / 1e6], "MB")
    if job.bandwidth:
        metrics["mem_bandwidth_gb_s"] = job.bandwidth
    return BenchRecord(
        model=case.model,
        variant=case.variant,
        engine=case.engine,
        provider=case.provider,
        scenario=scenario.name,
        meta=BenchMeta(
            packages=info.packages,
            cpu_model=cpu_model(),
            cores=os.cpu_count() or 0,
            threads=case.threads,
            precision=info.precision,
            quantization=info.quantization,
            prompt_tokens=round(sum(prompt_lengths) / len(prompt_lengths)),
            generation_tokens=scenario.gen_tokens,
            warmup=job.warmup,
            repetitions=job.repetitions,
            host=socket.gethostname(),
        ),
        load_time_s=load_time_s,
        size_bytes=info.size_bytes,
        peak_rss_mb=rss_mb,
        metrics=metrics,
        quality=quality,
        decode_bound_tok_s=bound,
    )


def run_job(job: CaseJob) -> CaseResult:
    cls = engine_class(job.case.engine)
    start = time.perf_counter()
    engine = cls(job.case)
    load_time_s = time.perf_counter() - start
    emit(event="step", what="loaded")
    if job.action == "tokenize":
        return CaseResult(
            tokens={name: engine.tokenize(text) for name, text in job.texts.items()},
            chat_ids=[engine.chat_ids(messages) for messages in job.chats],
        )
    timings = {s.name: run_scenario(engine, s, job.warmup, job.repetitions) for s in job.scenarios}
    rss_mb = peak_rss_mb()  # before quality: its full-sequence logits are not what serving costs
    info = engine.info()  # after: reading a model's metadata is not what serving costs either
    quality = None
    if job.quality:
        q = job.quality
        quality = score_windows(engine.logits, q.ids, q.reference, q.text, q.reference_logits, q.save_logits)
        emit(event="step", what="quality")
    records = [
        make_record(job, s, timings[s.name], info, load_time_s, rss_mb, quality) for s in job.scenarios
    ]
    return CaseResult(records=records)


def main(argv: list[str]) -> int:
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = CaseJob.model_validate_json(job_path.read_text())
    try:
        result = run_job(job)
    except (SlmopsError, OSError, ValueError, RuntimeError) as exc:
        # Reported in the case's record; the parent carries on with the other cases.
        result = CaseResult(error=f"{type(exc).__name__}: {exc}")
    result_path.write_text(result.model_dump_json(by_alias=True))
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
