"""Decode speed of ONNX variants as a ratio to llama.cpp, paired round by round in one process.

    python -m bench.paired_decode MODEL.gguf ONNX_DIR [ONNX_DIR ...] [--rounds 10] [--tokens 64]

`bench compare` gives each case its own process (so peak RSS is its own) and interleaves
repetitions; on a host whose speed drifts by 20 % from minute to minute, single medians still
disagree by more than the differences between close variants. Here every model is loaded in this
process, each round runs every model once back to back, and each round's rate is divided by
llama.cpp's rate in that same round: the median of those ratios is what drift moves least.
Same loops as `bench compare` (bench.engines), 2 threads, the same 128 prompt token ids.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench.cases import CaseSpec
from bench.engines.base import Engine


def _engine(path: Path, threads: int, context: int) -> tuple[str, Engine]:
    if path.suffix == ".gguf":
        from bench.engines.llamacpp import LlamaCppEngine

        case = CaseSpec(engine="llama.cpp", path=path, model=str(path), variant="gguf", threads=threads)
        return "llama.cpp", LlamaCppEngine(case.model_copy(update={"context_tokens": context}))
    from bench.engines.ort_genai import OrtGenaiEngine

    case = CaseSpec(
        engine="onnxruntime-genai", path=path, model=str(path), variant=path.name, threads=threads
    )
    return path.name, OrtGenaiEngine(case)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", type=Path, help="the GGUF llama.cpp runs: the baseline of every ratio")
    ap.add_argument("onnx", type=Path, nargs="+", help="ONNX variant folders")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=64, help="tokens decoded per run")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    engines = dict(_engine(p, args.threads, 128 + args.tokens) for p in [args.gguf, *args.onnx])
    text = "The quick brown fox jumps over the lazy dog. " * 40
    prompt = engines["llama.cpp"].tokenize(text)[:128]
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for rnd in range(args.rounds + 1):  # round 0 warms every model up
        for name, engine in engines.items():
            t = engine.generate(prompt, args.tokens)
            if rnd:
                rates[name].append((t.generated_tokens - 1) / (t.total_s - t.ttft_s))
    base = rates["llama.cpp"]
    print(f"{'case':<28} {'decode tok/s':>12} {'x llama.cpp':>12}   (medians of {args.rounds} paired rounds)")
    for name, r in rates.items():
        ratio = statistics.median(a / b for a, b in zip(r, base, strict=True))
        print(f"{name:<28} {statistics.median(r):>12.1f} {ratio:>12.3f}")


if __name__ == "__main__":
    main()
