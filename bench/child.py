"""One case in its own process: `python -m bench.child JOB.json RESULT.json`.

Own process per case so peak RSS belongs to that case alone and one engine's threads, allocator or
crash never touches another's figures. The child loads its engine, says `ready`, then obeys the
parent one command per stdin line, answering one JSON line on stdout each:

    {"cmd": "run", "scenario": NAME, "warmup": false}  -> {"event": "ran"}   one pass over its prompts
    {"cmd": "finish", "bandwidth": SUMMARY, "quality": QUALITYJOB}  -> {"event": "finished"}
                                                       peak RSS, then quality, then the records

so the parent decides the order: all of one case, or one repetition of every case in turn
(interleaved, so a neighbour's load on a shared machine falls on every case alike).
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

from bench.bandwidth import best
from bench.cases import CaseSpec, Scenario
from bench.engines import Engine, EngineInfo, engine_class
from bench.quality import score_windows
from edge_agent.bench_metrics import GenerationTiming, decode_bound_tok_s, summarize, summarize_timings
from edge_agent.contracts.bench_record import BenchMeta, BenchRecord, Quality, Summary
from edge_agent.device_bench import cpu_model
from edge_agent.errors import SlmopsError
from edge_agent.memory import peak_rss_mb, rss_mb


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
    texts: dict[str, str] = Field(default_factory=dict)
    chats: list[list[dict[str, str]]] = Field(default_factory=list)


class CaseResult(BaseModel):
    records: list[BenchRecord] = Field(default_factory=list)
    tokens: dict[str, list[int]] = Field(default_factory=dict)
    chat_ids: list[list[int]] = Field(default_factory=list)
    error: str | None = None


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


def make_record(
    job: CaseJob,
    scenario: Scenario,
    timings: list[GenerationTiming],
    info: EngineInfo,
    load_time_s: float,
    peak_mb: float,
    quality: Quality | None,
    bandwidth: Summary | None,
    held_mb: float | None = None,
) -> BenchRecord:
    case = job.case
    prompt_lengths = [len(p) for p in scenario.prompts]
    bound = None
    if bandwidth:
        bound = decode_bound_tok_s(best(bandwidth), info.weight_bytes_per_token)
    metrics = summarize_timings(timings)
    # The bound's two inputs travel with it, so a reader can check it.
    metrics["weight_mb_per_token"] = summarize([info.weight_bytes_per_token / 1e6], "MB")
    if bandwidth:
        metrics["mem_bandwidth_gb_s"] = bandwidth
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
        peak_rss_mb=peak_mb,
        rss_mb=held_mb,
        metrics=metrics,
        quality=quality,
        decode_bound_tok_s=bound,
    )


def serve_commands(job: CaseJob, engine: Engine, load_time_s: float) -> CaseResult:
    """Obey the parent's commands until `finish`; warm-up passes are run and not kept."""
    scenarios = {s.name: s for s in job.scenarios}
    timings: dict[str, list[GenerationTiming]] = {name: [] for name in scenarios}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "run":
            scenario = scenarios[cmd["scenario"]]
            ran = [engine.generate(prompt, scenario.gen_tokens) for prompt in scenario.prompts]
            if not cmd.get("warmup"):
                timings[scenario.name] += ran
            emit(event="ran")
        elif cmd["cmd"] == "finish":
            bandwidth = Summary.model_validate(cmd["bandwidth"]) if cmd.get("bandwidth") else None
            quality = QualityJob.model_validate(cmd["quality"]) if cmd.get("quality") else None
            return finish(job, engine, timings, load_time_s, bandwidth, quality)
    raise RuntimeError("the parent closed the command stream before `finish`")


def finish(
    job: CaseJob,
    engine: Engine,
    timings: dict[str, list[GenerationTiming]],
    load_time_s: float,
    bandwidth: Summary | None,
    q: QualityJob | None,
) -> CaseResult:
    peak_mb = peak_rss_mb()  # before quality: its full-sequence logits are not what serving costs
    held_mb = rss_mb()  # what the loaded model holds between requests
    info = engine.info()  # after: reading a model's metadata is not what serving costs either
    quality = None
    if q is not None:
        quality = score_windows(engine.logits, q.ids, q.reference, q.text, q.reference_logits, q.save_logits)
    records = [
        make_record(job, s, timings[s.name], info, load_time_s, peak_mb, quality, bandwidth, held_mb)
        for s in job.scenarios
        if timings[s.name]
    ]
    return CaseResult(records=records)


def run_job(job: CaseJob) -> CaseResult:
    cls = engine_class(job.case.engine)
    start = time.perf_counter()
    engine = cls(job.case)
    load_time_s = time.perf_counter() - start
    if job.action == "tokenize":
        return CaseResult(
            tokens={name: engine.tokenize(text) for name, text in job.texts.items()},
            chat_ids=[engine.chat_ids(messages) for messages in job.chats],
        )
    emit(event="ready")
    return serve_commands(job, engine, load_time_s)


def main(argv: list[str]) -> int:
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = CaseJob.model_validate_json(job_path.read_text())
    try:
        result = run_job(job)
    except (SlmopsError, OSError, ValueError, RuntimeError) as exc:
        # Reported in the case's record; the parent carries on with the other cases.
        result = CaseResult(error=f"{type(exc).__name__}: {exc}")
    result_path.write_text(result.model_dump_json(by_alias=True))
    emit(event="finished", error=result.error)
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
