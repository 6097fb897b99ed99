"""Speed and memory of one model, measured in a process of its own so RSS figures never mix.

The parent calls `measure(...)`; the child (`python -m build_side.distill.probe JOB_JSON`) loads the
model, runs greedy generations of a fixed length (EOS ignored, so teacher and student do the same
work), and prints one JSON line. Definitions as in DESIGN.md section 8:
- TTFT: request to first generated token (prefill + first sample);
- decode tok/s: tokens after the first / time after the first;
- peak RSS of the process (VmHWM), and the model's share: peak minus RSS before loading.
Engines: `torch` (a Hugging Face folder, fp32 in transformers) and `onnx` (an onnxruntime-genai
variant folder through `edge_agent.runtime`, what a device runs).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from edge_agent.errors import DistillError

Engine = Literal["torch", "onnx"]


class ProbeJob(BaseModel):
    engine: Engine
    model_dir: str
    prompts: list[str]  # user messages, sent through the chat template
    new_tokens: int = 32
    repeats: int = 2  # timed runs per prompt, after one warm-up run
    threads: int | None = None


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss_bytes() -> int:
    """This process's RSS high-water mark. VmHWM belongs to the address space exec created, unlike
    ru_maxrss, which Linux carries over from the parent that forked us (a big parent would show)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB elsewhere


def _torch_runs(job: ProbeJob) -> tuple[list[float], list[float], float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if job.threads:
        torch.set_num_threads(job.threads)
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(job.model_dir)
    model = AutoModelForCausalLM.from_pretrained(job.model_dir).eval()
    load_s = time.perf_counter() - start

    @torch.inference_mode()
    def run(prompt: str) -> tuple[float, float]:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)  # prefill
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        t_first = time.perf_counter()
        for _ in range(job.new_tokens - 1):  # decode, one token at a time with the KV cache
            out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        t_end = time.perf_counter()
        return t_first - t0, (job.new_tokens - 1) / (t_end - t_first)

    return (*_timed(run, job), load_s)


def _onnx_runs(job: ProbeJob) -> tuple[list[float], list[float], float]:
    from edge_agent.runtime import GenerationParams, LoadedModel

    start = time.perf_counter()
    model = LoadedModel(Path(job.model_dir), threads=job.threads)
    load_s = time.perf_counter() - start
    params = GenerationParams(max_new_tokens=job.new_tokens, min_new_tokens=job.new_tokens)

    def run(prompt: str) -> tuple[float, float]:
        gen = model.generate(model.encode(model.chat_prompt([{"role": "user", "content": prompt}])), params)
        for _ in gen:
            pass
        if gen.ttft_s is None or gen.decode_tok_s is None:
            raise DistillError(f"{job.model_dir}: generation produced fewer than 2 tokens")
        return gen.ttft_s, gen.decode_tok_s

    return (*_timed(run, job), load_s)


def _timed(run: Any, job: ProbeJob) -> tuple[list[float], list[float]]:
    run(job.prompts[0])  # warm-up: first-call allocations and lazy initialisation
    ttft, decode = [], []
    for _ in range(job.repeats):
        for prompt in job.prompts:
            a, b = run(prompt)
            ttft.append(a)
            decode.append(b)
    return ttft, decode


def _import_engine(engine: Engine) -> None:
    """Load the engine's libraries first, so the baseline RSS holds them and the model share does not."""
    if engine == "torch":
        import torch  # noqa: F401
        import transformers.models.auto.modeling_auto  # noqa: F401
    else:
        import edge_agent.runtime  # noqa: F401


def run_job(job: ProbeJob) -> dict[str, Any]:
    _import_engine(job.engine)
    rss_before = _rss_bytes()  # the interpreter and the engine's libraries, before any weights
    ttft, decode, load_s = (_torch_runs if job.engine == "torch" else _onnx_runs)(job)
    peak = _peak_rss_bytes()
    return {
        "engine": job.engine,
        "model_dir": job.model_dir,
        "new_tokens": job.new_tokens,
        "runs": len(ttft),
        "threads": job.threads,
        "load_s": load_s,
        "ttft_ms": statistics.median(ttft) * 1000,
        "decode_tok_s": statistics.median(decode),
        "ttft_ms_samples": [t * 1000 for t in ttft],
        "decode_tok_s_samples": decode,
        "peak_rss_mb": peak / 2**20,
        "model_rss_mb": (peak - rss_before) / 2**20,
        "baseline_rss_mb": rss_before / 2**20,
    }


def measure(job: ProbeJob, timeout_s: float = 1800) -> dict[str, Any]:
    """Run `job` in a fresh Python process and return its figures."""
    argv = [sys.executable, "-m", "build_side.distill.probe", job.model_dump_json()]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise DistillError(f"measuring {job.model_dir} took longer than {timeout_s:.0f} s") from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise DistillError(f"measuring {job.model_dir} ({job.engine}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv: list[str]) -> int:
    from edge_agent.errors import SlmopsError

    job = ProbeJob.model_validate_json(argv[0])
    try:
        print(json.dumps(run_job(job)))
    except SlmopsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
