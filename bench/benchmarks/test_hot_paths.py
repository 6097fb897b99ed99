"""Hot paths of the device side, timed with pytest-benchmark: one decode step, tokenization,
sha256 of a bundle file, manifest verification.

    .venv/bin/python -m pytest bench/benchmarks --benchmark-only
    .venv/bin/python -m pytest bench/benchmarks --benchmark-only --benchmark-save=baseline
    .venv/bin/python -m pytest bench/benchmarks --benchmark-only --benchmark-compare
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from edge_agent.bundle_check import verify_bundle
from edge_agent.hashing import sha256_file
from edge_agent.runtime import GenerationParams, LoadedModel
from edge_agent.signing import TrustedKeys

PROSE = (files("bench") / "data" / "prose.txt").read_text()
STEPS = 200


def test_decode_step(benchmark, variant_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """One generated token on a warm generator (KV cache in place), 1 thread."""
    model = LoadedModel(variant_dir, threads=1)
    prompt = model.encode(PROSE)[:16]
    n = STEPS + 20
    tokens = model.token_ids(prompt, GenerationParams(max_new_tokens=n, min_new_tokens=n))
    for _ in range(10):  # prefill and a few steps before timing
        next(tokens)
    benchmark.pedantic(next, args=(tokens,), rounds=STEPS, iterations=1, warmup_rounds=5)


def test_tokenize_prose(benchmark, variant_dir: Path) -> None:  # type: ignore[no-untyped-def]
    model = LoadedModel(variant_dir)
    ids = benchmark(model.encode, PROSE)
    assert len(ids) > 1000


def test_sha256_of_largest_bundle_file(benchmark, variant_dir: Path) -> None:  # type: ignore[no-untyped-def]
    largest = max((p for p in variant_dir.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    benchmark.extra_info["bytes"] = largest.stat().st_size
    benchmark.pedantic(sha256_file, args=(largest,), rounds=5, iterations=1)


def test_manifest_verification(benchmark, make_bundle, keys_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """Signature, then size and sha256 of every file of a signed two-variant bundle."""
    bundle = make_bundle("1.0.0", variants=("cpu-fp32", "cpu-int4"))
    trusted = TrustedKeys.from_paths([keys_dir])
    report = benchmark.pedantic(verify_bundle, args=(bundle, trusted), rounds=5, iterations=1)
    assert report.ok and report.files_checked > 0
