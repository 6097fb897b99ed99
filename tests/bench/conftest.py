"""One real `bench compare` over the tiny model, shared by the tests that read its outputs."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.contracts.bench_record import BenchRecord
from tests.conftest import cli


@dataclass
class CompareRun:
    out: Path
    records: list[BenchRecord]
    results: Path
    plots: Path
    stderr: str


@pytest.fixture(scope="session")
def compare_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_variants: dict[str, Path], tiny_model_dir: Path
) -> CompareRun:
    """cpu-fp32 (the reference), cpu-int4 and PyTorch on the tiny model: 2 scenarios, 2 reps."""
    out = tmp_path_factory.mktemp("bench-out")
    results, plots = out / "results.jsonl", out / "plots"
    argv = cli(
        "bench", "compare",
        "--onnx", str(tiny_variants["cpu-fp32"]),
        "--onnx", str(tiny_variants["cpu-int4"]),
        "--pytorch", str(tiny_model_dir),
        "-t", "1", "-s", "pp16-tg8", "-s", "chat", "--chat-tokens", "4",
        "--warmup", "1", "--reps", "2", "--quality-tokens", "96",
        "--format", "json", "--output", str(out / "records.json"), "-o", str(out / "table.md"),
        "--plots", str(plots), "--results", str(results), "--baseline", "pytorch:fp32",
    )  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [BenchRecord.model_validate(r) for r in json.loads(proc.stdout)]
    return CompareRun(out, records, results, plots, proc.stderr)
