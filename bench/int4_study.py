"""The cpu-int4 study (issue 10): build the int4 candidates of SmolLM2-135M-Instruct into work/int4-study
and run them beside llama.cpp on the source GGUF in one `bench compare`.

    python -m bench.int4_study                   # build what is missing, then compare
    python -m bench.int4_study --only-compare    # compare the folders already built

bench does not import build_side: the variants are built through the `slmops convert` CLI
(`python -m build_side convert`), one call per set of settings. Results: work/int4-study/compare.md
and .json; docs/int4.md holds the figures of the last run and what each candidate is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

SOURCE = "smollm2-135m-instruct"
OUT = Path("work/int4-study")

# id -> `slmops convert` options. Each builds variant <id> (target cpu-int4) into OUT/<id>/<id>.
CANDIDATES: dict[str, list[str]] = {
    # block 32, symmetric, tied embedding / head in 4 bits; any explicit setting keeps the builder's
    # defaults (a plain cpu-int4 from this source carries the GGUF's blocks: slmops convert's default)
    "builder-default": ["--block-size", "32"],
    "asym-int8head": ["--asymmetric", "--int8-lm-head", "--algorithm", "rtn"],
    "gguf-uint8zp": ["--asymmetric", "--int8-lm-head", "--algorithm", "rtn", "--gguf-blocks", "uint8"],
    "gguf-offset": ["--asymmetric", "--int8-lm-head", "--algorithm", "rtn", "--gguf-blocks", "offset"],
    # the recipe's cpu-int4 (1.2.0): remainder as extra 4-bit digits, gate + up in one MatMul
    "gguf-fused": ["--asymmetric", "--int8-lm-head", "--algorithm", "rtn", "--gguf-blocks", "fused"],
    # recipe 1.1.0: exact with fp32 activations, but the 8-bit head is de-quantized every token
    "gguf-offset-acc1": [
        *["--asymmetric", "--int8-lm-head", "--algorithm", "rtn", "--gguf-blocks", "offset"],
        *["--accuracy-level", "1"],
    ],
}


def _gguf() -> str:
    code = f"from build_side.sources import named_source_file as n; print(n({SOURCE!r}))"
    return subprocess.check_output([sys.executable, "-c", code], text=True).strip()


def _convert(variant: str, out: Path, options: list[str]) -> None:
    cmd = [sys.executable, "-m", "build_side", "convert", SOURCE, "-v", variant, "-o", str(out)]
    subprocess.run([*cmd, *options, "--no-eval"], check=True)


def build(ids: list[str]) -> None:
    if not (OUT / "reference" / "cpu-fp32").exists():
        _convert("cpu-fp32", OUT / "reference", [])
    for vid in ids:
        if not (OUT / vid / vid).exists():
            _convert(f"{vid}=cpu-int4", OUT / vid, CANDIDATES[vid])


def compare(ids: list[str], reps: int, quality_tokens: int) -> None:
    """llama.cpp first after the reference, then the candidates: every case in its own process, 2 threads."""
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "compare",
        "--onnx",
        str(OUT / "reference" / "cpu-fp32"),
        "--gguf",
        _gguf(),
    ]
    for vid in ids:
        cmd += ["--onnx", str(OUT / vid / vid)]
    cmd += ["-t", "2", "-s", "pp128-tg128", "-n", str(reps), "--quality-tokens", str(quality_tokens)]
    cmd += ["--reference", "cpu-fp32", "--baseline", "llama.cpp:q4_1"]
    cmd += ["-o", str(OUT / "compare.md"), "-o", str(OUT / "compare.json")]
    subprocess.run(cmd, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only-compare", action="store_true")
    parser.add_argument("--candidate", action="append", choices=list(CANDIDATES), help="default: all")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quality-tokens", type=int, default=1024)
    args = parser.parse_args()
    ids = args.candidate or list(CANDIDATES)
    if not args.only_compare:
        build(ids)
    compare(ids, args.reps, args.quality_tokens)


if __name__ == "__main__":
    main()
