"""`bench compare` on the tiny model: records, formats, plots, results file."""

from __future__ import annotations

import csv
import io
import json
import subprocess

from bench import report
from bench.history import load_records
from edge_agent.contracts.bench_record import BenchRecord
from tests.bench.conftest import CompareRun
from tests.conftest import cli

SPEED = {"ttft_ms", "prefill_tok_s", "decode_tok_s", "tpot_ms", "e2e_tok_s"}


def by_case(run: CompareRun) -> dict[tuple[str, str, str], BenchRecord]:
    return {(r.engine, r.variant, r.scenario): r for r in run.records}


def test_every_case_and_scenario_has_a_valid_record(compare_run: CompareRun) -> None:
    cases = by_case(compare_run)
    assert set(cases) == {
        (engine, variant, scenario)
        for engine, variant in [
            ("onnxruntime-genai", "cpu-fp32"),
            ("onnxruntime-genai", "cpu-int4"),
            ("pytorch", "fp32"),
        ]
        for scenario in ("pp16-tg8", "chat")
    }
    for r in compare_run.records:
        assert r.error is None
        BenchRecord.model_validate(r.model_dump(mode="json", by_alias=True))  # round-trips through JSON
        assert set(r.metrics) >= SPEED
        assert r.meta.threads == 1 and r.meta.warmup == 1 and r.meta.repetitions == 2
        assert r.load_time_s and r.load_time_s > 0 and r.size_bytes and r.peak_rss_mb and r.peak_rss_mb > 10
        assert r.decode_bound_tok_s and r.decode_bound_tok_s > 0


def test_fixed_lengths_and_raw_samples(compare_run: CompareRun) -> None:
    pp = by_case(compare_run)[("onnxruntime-genai", "cpu-int4", "pp16-tg8")]
    assert (pp.meta.prompt_tokens, pp.meta.generation_tokens) == (16, 8)
    assert len(pp.metrics["decode_tok_s"].samples) == 2  # one per repetition
    chat = by_case(compare_run)[("onnxruntime-genai", "cpu-int4", "chat")]
    assert len(chat.metrics["ttft_ms"].samples) == 2 * 6  # every chat prompt, each repetition
    assert chat.meta.generation_tokens == 4


def test_quality_against_the_reference(compare_run: CompareRun) -> None:
    cases = by_case(compare_run)
    ref = cases[("onnxruntime-genai", "cpu-fp32", "pp16-tg8")].quality
    int4 = cases[("onnxruntime-genai", "cpu-int4", "pp16-tg8")].quality
    torch = cases[("pytorch", "fp32", "pp16-tg8")].quality
    assert ref and int4 and torch
    assert ref.reference == "cpu-fp32" and ref.kl_divergence == 0.0 and ref.top1_agreement == 1.0
    assert ref.tokens == int4.tokens == torch.tokens == 95
    # PyTorch fp32 and ONNX fp32 are the same weights: nearly the same distributions.
    assert torch.kl_divergence is not None and torch.kl_divergence < 1e-3
    assert torch.perplexity == __import__("pytest").approx(ref.perplexity, rel=1e-3)
    assert int4.kl_divergence is not None and int4.kl_divergence > torch.kl_divergence


def test_peak_rss_is_per_case(compare_run: CompareRun) -> None:
    cases = by_case(compare_run)
    onnx = cases[("onnxruntime-genai", "cpu-int4", "pp16-tg8")].peak_rss_mb
    torch = cases[("pytorch", "fp32", "pp16-tg8")].peak_rss_mb
    assert onnx and torch and torch > onnx  # torch's own import costs more than the whole tiny ONNX case


def test_outputs_in_every_format(compare_run: CompareRun) -> None:
    written = json.loads((compare_run.out / "records.json").read_text())
    assert len(written) == len(compare_run.records) == 6
    rows = list(csv.DictReader(io.StringIO(report.to_csv(compare_run.records))))
    assert len(rows) == 6 and {"decode_tok_s", "decode_tok_s_p90", "perplexity"} <= set(rows[0])
    assert float(rows[0]["decode_tok_s"]) > 0
    md = (compare_run.out / "table.md").read_text().splitlines()  # -o table.md: format by suffix
    assert (
        md[0].startswith("| case | scenario |")
        and len([line for line in md if line.startswith("|")]) == 2 + 6
    )
    assert md[-1].startswith("decode bound = memory read bandwidth ")
    assert any(line.startswith("| pytorch:fp32 | chat |") for line in md)


def test_speed_against_the_baseline_is_paired_by_repetition(compare_run: CompareRun) -> None:
    """--baseline pytorch:fp32: 'x base' is the median of per-repetition ratios, taken from raw samples."""
    import statistics

    md = [line.split(" | ") for line in (compare_run.out / "table.md").read_text().splitlines()]
    col = md[0].index("x base")
    shown = {(cells[0].lstrip("| "), cells[1]): cells[col] for cells in md[2:] if len(cells) > col}
    cases = by_case(compare_run)
    for scenario in ("pp16-tg8", "chat"):
        base = cases[("pytorch", "fp32", scenario)].metrics["decode_tok_s"].samples
        onnx = cases[("onnxruntime-genai", "cpu-int4", scenario)].metrics["decode_tok_s"].samples
        expected = statistics.median(a / b for a, b in zip(onnx, base, strict=True))
        assert shown[("cpu-int4", scenario)] == f"{expected:.2f}"
        assert shown[("pytorch:fp32", scenario)] == "1.00"


def test_an_unknown_baseline_is_refused_before_anything_runs(tiny_variants) -> None:  # type: ignore[no-untyped-def]
    argv = cli("bench", "compare", "--onnx", str(tiny_variants["cpu-int4"]), "--baseline", "llama.cpp:q4_1")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert (
        "--baseline" in proc.stderr and "'llama.cpp:q4_1' is not one of the cases ['cpu-int4']" in proc.stderr
    )


def test_plots_and_results_file(compare_run: CompareRun) -> None:
    for name in ("speed_vs_quality.png", "speed_vs_size.png"):
        data = (compare_run.plots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [r.model_dump() for r in load_records(compare_run.results)] == [
        r.model_dump() for r in compare_run.records
    ]


def test_bundle_variants_from_a_registry(
    make_bundle, registry_dir, registry_server, keys_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """A signed bundle fetched over HTTP: signature checked, files pinned by sha256, variants as cases."""
    make_bundle("1.0.0", variants=("cpu-fp32", "cpu-int4"), root=registry_dir / "bundles")
    argv = cli(
        "bench", "compare", "--registry", registry_server, "--bundle", "tiny-chat@1.0.0",
        "--variant", "cpu-int4", "-k", str(keys_dir), "-t", "1", "-s", "pp8-tg4",
        "--warmup", "0", "--reps", "1", "--no-quality", "--json", "--no-save",
    )  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = [BenchRecord.model_validate(r) for r in json.loads(proc.stdout)]
    assert (record.model, record.variant, record.meta.precision) == ("tiny-chat@1.0.0", "cpu-int4", "int4")
    assert record.quality is None and record.metrics["decode_tok_s"].median > 0


def test_untrusted_bundle_is_refused(make_bundle, registry_dir, registry_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edge_agent.signing import SigningKey

    make_bundle("1.0.0", root=registry_dir / "bundles")
    stranger = tmp_path / "keys"
    SigningKey.generate().save(stranger)
    argv = cli(
        "bench",
        "compare",
        "--registry",
        registry_server,
        "--bundle",
        "tiny-chat@1.0.0",
        "-k",
        str(stranger),
        "--no-save",
    )
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "not trusted" in proc.stderr


def test_a_failing_case_is_reported_and_the_others_run(tiny_variants, tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "cpu-broken"
    broken.mkdir()
    (broken / "genai_config.json").write_text((tiny_variants["cpu-int4"] / "genai_config.json").read_text())
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    for mode in ("--interleave", "--sequential"):
        argv = cli(
            "bench", "compare", "--onnx", str(tiny_variants["cpu-int4"]), "--onnx", str(broken), mode,
            "-t", "1", "-s", "pp8-tg4", "--warmup", "0", "--reps", "1", "--no-quality", "--json", "--no-save",
        )  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1, proc.stderr[-2000:]
        good, bad = (BenchRecord.model_validate(r) for r in json.loads(proc.stdout))
        assert good.variant == "cpu-int4" and good.error is None and good.metrics["decode_tok_s"].median > 0
        assert bad.variant == "cpu-broken" and bad.error and "could not load" in bad.error
