"""The int4 model's memory levers, each alone and together: one child process per case.

    python -m bench.int4_memory BASE_DIR [--case NAME=DIR[,option=value...]] [--reps 3] [--json]

Every case loads a variant folder with `edge_agent.runtime.LoadedModel` (2 threads), runs pp128-tg128
greedy (one warm-up, then `--reps` timed runs) and reports the process's RSS after loading, its peak
(VmHWM) and its RSS after the runs (split into anonymous memory and pages of mapped files, which the
kernel can drop and read again), TTFT and decode tok/s, and whether its greedy tokens match the
first case's (the levers must not change what the model says). Options after the folder:
`kv=context` sizes the KV cache to the model's context instead of the request; any other `key=value`
is a decoder session option (`enable_cpu_mem_arena=false`, `enable_mem_pattern=false`, ...).
docs/int4.md holds the figures of the last run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROMPT_TOKENS, GEN_TOKENS = 128, 128


def parse_case(text: str) -> dict[str, Any]:
    name, _, rest = text.partition("=")
    folder, *opts = rest.split(",")
    session: dict[str, Any] = {}
    kv = "request"
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "kv":
            kv = value
        else:
            session[key] = {"true": True, "false": False}.get(value, value)
    return {"name": name, "dir": folder, "session_options": session, "kv": kv}


def child(case: dict[str, Any], reps: int) -> dict[str, Any]:
    """Runs in its own process: load, warm up, time `reps` runs, read memory."""
    import onnxruntime_genai as og

    from edge_agent.device_bench import fixed_prompt_ids
    from edge_agent.memory import peak_rss_mb, resident_split_mb, rss_mb
    from edge_agent.runtime import LoadedModel

    started = time.perf_counter()
    model = LoadedModel(Path(case["dir"]), threads=2, session_options=case["session_options"])
    load_s = time.perf_counter() - started
    loaded_mb = rss_mb()
    prompt = fixed_prompt_ids(model, PROMPT_TOKENS)
    max_length = model.context_length if case["kv"] == "context" else PROMPT_TOKENS + GEN_TOKENS

    def run() -> tuple[float, float, list[int]]:
        params = og.GeneratorParams(model.model)
        params.set_search_options(
            max_length=max_length, min_length=PROMPT_TOKENS + GEN_TOKENS, do_sample=False
        )
        t0 = time.perf_counter()
        gen = og.Generator(model.model, params)
        gen.append_tokens(prompt)
        tokens: list[int] = []
        first = 0.0
        while len(tokens) < GEN_TOKENS:
            gen.generate_next_token()
            tokens.append(int(gen.get_next_tokens()[0]))
            if len(tokens) == 1:
                first = time.perf_counter()
        end = time.perf_counter()
        return (first - t0) * 1000, (GEN_TOKENS - 1) / (end - first), tokens

    run()  # warm-up
    runs = [run() for _ in range(reps)]
    return {
        "name": case["name"],
        "load_s": round(load_s, 2),
        "loaded_rss_mb": round(loaded_mb, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_after_mb": round(rss_mb(), 1),
        **{f"{k}_after_mb": round(v, 1) for k, v in resident_split_mb().items()},
        "ttft_ms": round(statistics.median(r[0] for r in runs), 1),
        "decode_tok_s": round(statistics.median(r[1] for r in runs), 1),
        "tokens": runs[0][2],
    }


def measure(cases: list[dict[str, Any]], reps: int) -> list[dict[str, Any]]:
    results = []
    for case in cases:
        out = subprocess.run(
            [sys.executable, "-m", "bench.int4_memory", "--child", json.dumps(case), "--reps", str(reps)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            results.append({"name": case["name"], "error": out.stderr.strip().splitlines()[-1]})
            continue
        results.append(json.loads(out.stdout.splitlines()[-1]))
    reference = next((r["tokens"] for r in results if "tokens" in r), None)
    for r in results:
        if "tokens" in r:
            r["same_tokens"] = r.pop("tokens") == reference
    return results


def table(results: list[dict[str, Any]]) -> str:
    cols = (
        "loaded_rss_mb",
        "peak_rss_mb",
        "rss_after_mb",
        "anon_after_mb",
        "file_after_mb",
        "ttft_ms",
        "decode_tok_s",
        "same_tokens",
    )
    lines = ["| case | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for r in results:
        cells = (
            [str(r.get(c, "")) for c in cols] if "error" not in r else [r["error"]] + [""] * (len(cols) - 1)
        )
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", default=[], help="NAME=DIR[,option=value...]")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.reps)))
        return 0
    results = measure([parse_case(c) for c in args.case], args.reps)
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
