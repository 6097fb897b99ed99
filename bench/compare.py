"""Run a comparison: token ids fixed once, the reference case first, then each case in its own process.

Measuring lives here and in bench.child; presenting lives in bench.report and bench.plots.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from bench.bandwidth import measure_bandwidth
from bench.cases import CaseSpec, Scenario, fixed_prompt, parse_scenario
from bench.child import CaseJob, CaseResult, QualityJob
from bench.runner import CaseProcess
from edge_agent.bench_metrics import summarize
from edge_agent.contracts.bench_record import BenchMeta, BenchRecord, Summary
from edge_agent.errors import ContractError, ModelRuntimeError
from edge_agent.evaluation import text_label

DATA = files("bench") / "data"


@dataclass
class CompareOptions:
    scenarios: list[str] = field(default_factory=lambda: ["pp128-tg128"])
    warmup: int = 1
    repetitions: int = 3
    chat_tokens: int = 64
    reference: str | None = None  # a case label; None: the first case
    quality: bool = True
    quality_text: Path | None = None  # None: bench/data/prose.txt
    quality_tokens: int | None = None  # cap on scored tokens; None: the whole text
    bandwidth: bool = True
    interleave: bool = True  # one repetition of every case in turn, rather than case after case
    case_timeout_s: float = 1800.0


Progress = Callable[[str, str], None]  # (case label, what just finished)


def label_cases(cases: list[CaseSpec]) -> list[CaseSpec]:
    """Give every case a unique, short label; providers and threads appear only when they vary."""
    providers = {c.provider for c in cases}
    threads = {c.threads for c in cases}
    out = []
    seen: dict[str, int] = {}
    for case in cases:
        label = case.label or case.default_label(len(providers) > 1, len(threads) > 1)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        out.append(case.model_copy(update={"label": label}))
    return out


def chat_prompts() -> list[list[dict[str, str]]]:
    prompts = json.loads((DATA / "chat_prompts.json").read_text())
    return [[{"role": "user", "content": p}] for p in prompts]


def count_steps(cases: list[CaseSpec], opts: CompareOptions) -> int:
    """Progress steps of a comparison: per case load, warm-ups and repetitions per scenario, finish."""
    per_case = 1 + len(opts.scenarios) * (opts.warmup + opts.repetitions) + 1
    return len(cases) * per_case + 1  # + the tokenizer run


def build_scenarios(
    names: list[str], prose_ids: list[int], chat_ids: list[list[int]], chat_tokens: int
) -> list[Scenario]:
    scenarios = []
    for name in names:
        lengths = parse_scenario(name)
        if lengths is None:
            scenarios.append(Scenario(name=name, prompts=chat_ids, gen_tokens=chat_tokens))
        else:
            pp, tg = lengths
            scenarios.append(Scenario(name=name, prompts=[fixed_prompt(prose_ids, pp)], gen_tokens=tg))
    return scenarios


def error_records(case: CaseSpec, scenarios: list[str], error: str) -> list[BenchRecord]:
    return [
        BenchRecord(
            model=case.model,
            variant=case.variant,
            engine=case.engine,
            provider=case.provider,
            scenario=s,
            meta=BenchMeta(threads=case.threads, precision=case.precision),
            error=error,
        )
        for s in scenarios
    ]


def run_compare(
    cases: list[CaseSpec], opts: CompareOptions, progress: Progress | None = None
) -> list[BenchRecord]:
    """Every case on every scenario; records in case order, reference first. Failed cases carry `error`."""
    if not cases:
        raise ContractError("bench compare", "no cases: give --bundle, --onnx, --pytorch or --gguf")
    for name in opts.scenarios:
        parse_scenario(name)
    progress = progress or (lambda label, what: None)
    cases = label_cases(cases)
    labels = [c.label for c in cases]
    reference = opts.reference or labels[0]
    if reference not in labels:
        raise ContractError("--reference", f"{reference!r} is not one of the cases {labels}")
    cases.sort(key=lambda c: c.label != reference)  # stable: the reference first, others in order

    text_path = opts.quality_text or DATA / "prose.txt"
    text = Path(str(text_path)).read_text()
    text_name = text_label(Path(str(text_path)).name, text)
    with tempfile.TemporaryDirectory(prefix="slmops-bench-") as tmp:
        workdir = Path(tmp)
        job = CaseJob(action="tokenize", case=cases[0], texts={"prose": text}, chats=chat_prompts())
        tokenized = CaseProcess(job, workdir, opts.case_timeout_s).wait_result()
        if tokenized.error:
            raise ModelRuntimeError(
                f"{cases[0].label}: could not tokenize the bench texts: {tokenized.error}"
            )
        progress("tokenizer", "done")
        prose_ids = tokenized.tokens["prose"]
        scenarios = build_scenarios(opts.scenarios, prose_ids, tokenized.chat_ids, opts.chat_tokens)
        context = max(len(p) + s.gen_tokens for s in scenarios for p in s.prompts)
        jobs = [
            CaseJob(
                case=case.model_copy(update={"context_tokens": context}),
                scenarios=scenarios,
                warmup=opts.warmup,
                repetitions=opts.repetitions,
            )
            for case in cases
        ]
        quality = QualityPlan(opts, prose_ids, text_name, reference, workdir / "reference-logits.npy")
        measure: Measure = measure_bandwidth if opts.bandwidth else (lambda threads: None)
        if opts.interleave:
            results = run_interleaved(jobs, workdir, opts, scenarios, quality, measure, progress)
        else:  # each case to its end before the next: the same loop, one case at a time
            results = [
                result
                for job in jobs
                for result in run_interleaved([job], workdir, opts, scenarios, quality, measure, progress)
            ]
    records: list[BenchRecord] = []
    for case, result in zip(cases, results, strict=True):
        records += error_records(case, opts.scenarios, result.error) if result.error else result.records
    return records


@dataclass
class QualityPlan:
    """Who scores what: the reference saves its logits; the others compare once it succeeded."""

    opts: CompareOptions
    prose_ids: list[int]
    text: str
    reference: str
    path: Path
    reference_ok: bool = False

    def job(self, label: str) -> QualityJob | None:
        if not self.opts.quality:
            return None
        ids = self.prose_ids[: self.opts.quality_tokens] if self.opts.quality_tokens else self.prose_ids
        is_ref = label == self.reference
        return QualityJob(
            ids=ids,
            text=self.text,
            reference=self.reference,
            reference_logits=self.path if (self.reference_ok and not is_ref) else None,
            save_logits=self.path if is_ref else None,
        )

    def done(self, label: str, result: CaseResult) -> None:
        self.reference_ok = self.reference_ok or (label == self.reference and not result.error)


Measure = Callable[[int], Summary | None]


def run_interleaved(
    jobs: list[CaseJob],
    workdir: Path,
    opts: CompareOptions,
    scenarios: list[Scenario],
    quality: QualityPlan,
    measure: Measure,
    progress: Progress,
) -> list[CaseResult]:
    """Every case loaded in its own process, then each repetition run by every case in turn.

    On a shared machine a neighbour's burst then costs every case the same repetition, not one case
    all of its repetitions; bandwidth is sampled before every round and the best sample bounds all.
    """
    procs = []
    try:
        for job in jobs:  # loaded one after another: load time is not shared either
            procs.append(CaseProcess(job, workdir, opts.case_timeout_s))
            procs[-1].wait_ready()
            progress(job.case.label, "loaded")
        samples: list[float] = []
        threads = max(job.case.threads or 1 for job in jobs)
        for s in scenarios:
            for i in range(opts.warmup + opts.repetitions):
                warmup = i < opts.warmup
                if not warmup and (bw := measure(threads)):
                    samples += bw.samples
                for proc in procs:
                    proc.run(s.name, warmup=warmup)
                    progress(proc.label, f"{s.name} {'warm-up' if warmup else i - opts.warmup + 1}")
        bandwidth = summarize(samples, "GB/s") if samples else None
        results = []
        for proc in procs:  # the reference first: the others compare with its saved logits
            result = proc.finish(bandwidth, quality.job(proc.label))
            proc.close()
            progress(proc.label, "finished")
            quality.done(proc.label, result)
            results.append(result)
        return results
    finally:
        for proc in procs:
            proc.close()


__all__ = ["CompareOptions", "label_cases", "run_compare"]
