"""Run a comparison: token ids fixed once, the reference case first, then each case in its own process.

Measuring lives here and in bench.child; presenting lives in bench.report and bench.plots.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from bench.bandwidth import measure_bandwidth
from bench.cases import CaseSpec, Scenario, fixed_prompt, parse_scenario
from bench.child import CaseJob, CaseResult, QualityJob
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


def run_child(job: CaseJob, workdir: Path, progress: Progress, timeout_s: float) -> CaseResult:
    """Run one job in a fresh interpreter; a crash or a timeout becomes the result's error."""
    job_path = workdir / f"job-{job.case.label.replace('/', '_')}.json"
    result_path = job_path.with_suffix(".result.json")
    job_path.write_text(job.model_dump_json(by_alias=True))
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.child", str(job_path), str(result_path)]
    stderr_path = job_path.with_suffix(".stderr")
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if line.startswith("{"):
                    try:
                        event = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if event.get("event") == "step":
                        progress(job.case.label, event.get("what", ""))
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return CaseResult(error=f"timed out after {timeout_s:.0f} s")
    if result_path.is_file():
        return CaseResult.model_validate_json(result_path.read_text())
    tail = stderr_path.read_text()[-1500:].strip()
    return CaseResult(error=f"child exited with status {proc.returncode}: {tail}")


def count_steps(cases: list[CaseSpec], opts: CompareOptions) -> int:
    """Progress steps each case reports: load, warm-ups and repetitions per scenario, quality."""
    per_case = 1 + len(opts.scenarios) * (opts.warmup + opts.repetitions) + (1 if opts.quality else 0)
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
        tokenized = run_child(
            CaseJob(action="tokenize", case=cases[0], texts={"prose": text}, chats=chat_prompts()),
            workdir,
            lambda label, what: None,
            opts.case_timeout_s,
        )
        if tokenized.error:
            raise ModelRuntimeError(
                f"{cases[0].label}: could not tokenize the bench texts: {tokenized.error}"
            )
        progress("tokenizer", "done")
        prose_ids = tokenized.tokens["prose"]
        scenarios = build_scenarios(opts.scenarios, prose_ids, tokenized.chat_ids, opts.chat_tokens)
        threads = max((c.threads or 1) for c in cases)
        bandwidth: Summary | None = measure_bandwidth(threads) if opts.bandwidth else None

        quality_ids = prose_ids[: opts.quality_tokens] if opts.quality_tokens else prose_ids
        context = max(len(p) + s.gen_tokens for s in scenarios for p in s.prompts)
        ref_path = workdir / "reference-logits.npy"
        ref_ok = False
        records: list[BenchRecord] = []
        for case in cases:
            quality = None
            if opts.quality:
                is_ref = case.label == reference
                quality = QualityJob(
                    ids=quality_ids,
                    text=text_name,
                    reference=reference,
                    reference_logits=ref_path if (ref_ok and not is_ref) else None,
                    save_logits=ref_path if is_ref else None,
                )
            job = CaseJob(
                case=case.model_copy(update={"context_tokens": context}),
                scenarios=scenarios,
                warmup=opts.warmup,
                repetitions=opts.repetitions,
                quality=quality,
                bandwidth=bandwidth,
            )
            result = run_child(job, workdir, progress, opts.case_timeout_s)
            if result.error:
                records += error_records(case, opts.scenarios, result.error)
            else:
                records += result.records
                ref_ok = ref_ok or case.label == reference
    return records


__all__ = ["CompareOptions", "label_cases", "run_compare"]
