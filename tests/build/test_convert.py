"""`slmops convert`: real builds of the tiny model, settings recorded from the graph, quality measured."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from build_side.convert import TARGETS, load_variants, parse_variant
from build_side.quality import available_providers
from edge_agent.errors import ConvertError
from tests.conftest import cli


def test_cli_builds_variants_with_int4_options_and_prints_quality(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "onnx"
    args = [
        "convert",
        str(tiny_model_dir),
        "-o",
        str(out),
        "-v",
        "cpu-fp32",
        "-v",
        "cpu-int4",
        "-v",
        "cuda-int4",
    ]
    args += ["--block-size", "16", "--asymmetric", "--int8-lm-head"]  # fmt: skip
    args += ["--eval-tokens", "128", "--eval-window", "64"]
    proc = subprocess.run(cli("slmops", *args, "--json"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r["id"]: r for r in json.loads(proc.stdout)}
    assert set(records) == {"cpu-fp32", "cpu-int4", "cuda-int4"}
    q = records["cpu-int4"]["quantization"]
    # read back from the built graph, not echoed from the flags
    assert (q["block_size"], q["lm_head_precision"], q["algorithm"], q["symmetric"]) == (
        16,
        "int8",
        "rtn",
        False,
    )
    assert "quantization" not in records["cpu-fp32"]
    for vid in ("cpu-fp32", "cpu-int4"):
        assert records[vid]["eval"]["tokens"] == 126 and records[vid]["eval"]["reference"] == "cpu-fp32"
    # a GPU variant builds without the GPU; it is measured only where its provider exists
    cuda = records["cuda-int4"]
    assert cuda["device"] == "gpu" and cuda["execution_providers"] == ["CUDAExecutionProvider"]
    if "CUDAExecutionProvider" not in available_providers():
        assert "eval" not in cuda and "CUDAExecutionProvider" in cuda["eval_note"]
    assert (out / "cpu-int4" / "model.onnx").is_file() and (out / "cpu-int4.variant.json").is_file()
    assert "Reading layer" in (out / "convert.log").read_text()  # the builder's output went to the log
    assert "Reading layer" not in proc.stdout + proc.stderr


def test_quality_figures_are_sane(tiny_convert_dir: Path) -> None:
    records = {r.id: r for r in load_variants(tiny_convert_dir)}
    ref, int4 = records["cpu-fp32"].eval, records["cpu-int4"].eval
    assert ref is not None and int4 is not None
    assert ref.perplexity_ratio == 1.0 and ref.kl_divergence == 0 and ref.top1_agreement == 1.0
    assert int4.reference_perplexity == ref.perplexity
    assert 0.9 < int4.perplexity_ratio < 1.1  # random weights: quantization barely moves the figures
    assert 0 < int4.kl_divergence < 0.05 and 0.5 < int4.top1_agreement <= 1.0
    assert int4.size_bytes < 0.6 * ref.size_bytes
    assert int4.text.startswith("heldout.txt@sha256:")


def test_gpu_targets_are_known_and_bad_variants_are_refused() -> None:
    assert {"cuda-fp16", "cuda-int4", "dml-int4"} <= set(TARGETS)
    assert parse_variant("k4=cpu-int4", algorithm="k_quant").builder_options() == [
        "hf_token=false",
        "algo_config=k_quant",
    ]
    with pytest.raises(ConvertError, match="not a known target"):
        parse_variant("tpu-int4")
    with pytest.raises(ConvertError, match="only apply to int4/int8"):
        parse_variant("cpu-fp32", block_size=64)
