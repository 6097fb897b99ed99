"""The llama.cpp engine on the real SmolLM2 GGUF (needs the `llamacpp` extra; skipped without it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edge_agent.contracts.bench_record import BenchRecord
from tests.conftest import cli

pytest.importorskip("llama_cpp")


@pytest.mark.smollm2
def test_llamacpp_case_on_the_source_gguf(smollm2_gguf: Path) -> None:
    argv = cli(
        "bench", "compare", "--gguf", str(smollm2_gguf), "-t", "2", "-s", "pp16-tg8",
        "--warmup", "1", "--reps", "2", "--quality-tokens", "64", "--json", "--no-save",
    )  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = [BenchRecord.model_validate(r) for r in json.loads(proc.stdout)]
    assert (record.engine, record.variant) == ("llama.cpp", "q4_1")
    assert record.meta.prompt_tokens == 16 and record.meta.generation_tokens == 8
    assert len(record.metrics["decode_tok_s"].samples) == 2 and record.metrics["decode_tok_s"].median > 0
    assert record.quality and record.quality.tokens == 63 and 1 < record.quality.perplexity < 1000
    # Tied embeddings: the LM head reads token_embd, so every tensor byte is read per token.
    assert record.metrics["weight_mb_per_token"].median * 1e6 < record.size_bytes
