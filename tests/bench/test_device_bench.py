"""The on-device bench: a loaded variant in, a valid BenchRecord out, in the agent's own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge_agent.contracts.bench_record import BenchRecord
from edge_agent.device_bench import run_device_bench
from edge_agent.runtime import LoadedModel


def test_device_bench_of_a_loaded_variant(tiny_variants: dict[str, Path]) -> None:
    model = LoadedModel(tiny_variants["cpu-int4"], threads=1)
    record = run_device_bench(
        model, model_ref="tiny-chat@1.0.0", variant="cpu-int4", device="dev-1", precision="int4",
        prompt_tokens=12, gen_tokens=6, warmup=1, repetitions=2,
    )  # fmt: skip
    BenchRecord.model_validate_json(record.model_dump_json(by_alias=True))
    assert (record.scenario, record.engine, record.meta.device) == ("pp12-tg6", "onnxruntime-genai", "dev-1")
    assert record.meta.repetitions == 2 and record.meta.threads == 1
    assert len(record.metrics["decode_tok_s"].samples) == 2 and record.metrics["decode_tok_s"].median > 0
    assert record.size_bytes and record.size_bytes > 100_000 and record.peak_rss_mb
    assert record.rss_mb and 0 < record.rss_mb <= record.peak_rss_mb + 1  # the model is still held


def test_budget_stops_repetitions_early(tiny_variants: dict[str, Path]) -> None:
    model = LoadedModel(tiny_variants["cpu-int4"])
    record = run_device_bench(model, model_ref="m", variant="v", gen_tokens=4, repetitions=50, budget_s=0.0)
    assert record.meta.repetitions == 1


def test_device_bench_needs_no_heavy_imports(tiny_variants: dict[str, Path]) -> None:
    """What a device imports to bench: never torch, transformers, build_side or bench."""
    code = (
        "import sys, json\n"
        "from edge_agent.device_bench import run_device_bench\n"
        "from edge_agent.runtime import LoadedModel\n"
        f"r = run_device_bench(LoadedModel({str(tiny_variants['cpu-int4'])!r}), model_ref='m', variant='v',"
        " gen_tokens=3, warmup=0, repetitions=1)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('torch', 'transformers', 'build_side', 'bench', 'peft'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == []
