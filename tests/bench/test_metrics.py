"""Metric functions: definitions of DESIGN.md section 8 on hand-computed figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.cases import fixed_prompt, parse_scenario
from bench.quality import QualityAccumulator, log_softmax, score
from edge_agent.bench_metrics import (
    GenerationTiming,
    decode_bound_tok_s,
    fraction_of_bound,
    percentile,
    relative_change,
    stddev,
    summarize,
    summarize_timings,
    timing_metrics,
)
from edge_agent.errors import ContractError


def test_percentile_interpolates_like_numpy() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_stddev_is_the_sample_stddev() -> None:
    assert stddev([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == pytest.approx(
        np.std([2, 4, 4, 4, 5, 5, 7, 9], ddof=1)
    )
    assert stddev([3.0]) == 0.0


def test_summary_keeps_raw_samples() -> None:
    s = summarize([3, 1, 2], "ms")
    assert (s.unit, s.median, s.samples) == ("ms", 2.0, [3.0, 1.0, 2.0])
    assert s.p90 == pytest.approx(2.8)
    assert s.stddev == pytest.approx(1.0)


def test_timing_metrics_follow_the_definitions() -> None:
    # 100 prompt tokens, 11 generated; first token after 0.5 s (prefill 0.4 s), all done at 1.5 s.
    t = GenerationTiming(prompt_tokens=100, generated_tokens=11, ttft_s=0.5, total_s=1.5, prefill_s=0.4)
    m = timing_metrics(t)
    assert m["ttft_ms"] == pytest.approx(500.0)
    assert m["prefill_tok_s"] == pytest.approx(250.0)  # 100 / 0.4
    assert m["decode_tok_s"] == pytest.approx(10.0)  # (11 - 1) / (1.5 - 0.5)
    assert m["tpot_ms"] == pytest.approx(100.0)  # (1.5 - 0.5) / 10
    assert m["e2e_tok_s"] == pytest.approx(11 / 1.5)


def test_prefill_falls_back_to_ttft_and_one_token_has_no_decode() -> None:
    m = timing_metrics(GenerationTiming(prompt_tokens=64, generated_tokens=1, ttft_s=0.25, total_s=0.25))
    assert m["prefill_tok_s"] == pytest.approx(256.0)
    assert "decode_tok_s" not in m and "tpot_ms" not in m


def test_inconsistent_timing_is_refused() -> None:
    with pytest.raises(ValueError):
        GenerationTiming(prompt_tokens=1, generated_tokens=2, ttft_s=1.0, total_s=0.5)


def test_summarize_timings_over_repetitions() -> None:
    runs = [GenerationTiming(10, 5, 0.1, 0.1 + 4 * dt) for dt in (0.01, 0.02, 0.04)]
    s = summarize_timings(runs)
    assert s["tpot_ms"].samples == pytest.approx([10.0, 20.0, 40.0])
    assert s["decode_tok_s"].median == pytest.approx(50.0)
    assert s["decode_tok_s"].unit == "tok/s"


def test_decode_bound_and_fraction() -> None:
    assert decode_bound_tok_s(80e9, 84_000_000) == pytest.approx(952.38, rel=1e-4)
    assert fraction_of_bound(190.0, 950.0) == pytest.approx(0.2)
    assert fraction_of_bound(None, 950.0) is None
    with pytest.raises(ValueError):
        decode_bound_tok_s(1e9, 0)


def test_relative_change_direction() -> None:
    assert relative_change(90.0, 100.0, +1) == pytest.approx(-0.1)  # tok/s fell: worse
    assert relative_change(110.0, 100.0, -1) == pytest.approx(-0.1)  # latency rose: worse
    assert relative_change(90.0, 100.0, -1) == pytest.approx(0.1)


def test_quality_of_a_known_distribution() -> None:
    # Uniform over 4 tokens: perplexity is exactly 4, whatever the targets.
    logits = np.zeros((3, 4))
    q = score(logits, [0, 1, 2, 3], reference="self", text="t")
    assert q.tokens == 3 and q.perplexity == pytest.approx(4.0)


def test_kl_and_top1_against_a_reference(tmp_path) -> None:
    rng = np.random.default_rng(0)
    ref_logits = rng.normal(size=(5, 7))
    ids = [0, 1, 2, 3, 4, 5]
    ref_path = tmp_path / "ref.npy"
    self_q = score(ref_logits, ids, "ref", "t", save_logprobs_path=ref_path)
    assert self_q.kl_divergence == pytest.approx(0.0, abs=1e-6) and self_q.top1_agreement == 1.0
    other = ref_logits.copy()
    other[0] = other[0][::-1]  # change one position's distribution
    q = score(other, ids, "ref", "t", ref_logprobs_path=ref_path)
    p, r = np.exp(log_softmax(ref_logits[0])), log_softmax(other[0])
    expected_kl = float((p * (np.log(p) - r)).sum()) / 5
    assert q.kl_divergence == pytest.approx(expected_kl, rel=1e-5)
    expected_top1 = (4 + int(ref_logits[0].argmax() == other[0].argmax())) / 5
    assert q.top1_agreement == pytest.approx(expected_top1)


def test_accumulator_chunks_match_one_pass() -> None:
    rng = np.random.default_rng(1)
    lp = log_softmax(rng.normal(size=(10, 6)))
    targets = rng.integers(0, 6, size=10)
    whole, parts = QualityAccumulator(), QualityAccumulator()
    whole.add(lp, targets)
    parts.add(lp[:4], targets[:4])
    parts.add(lp[4:], targets[4:])
    assert parts.result("r", "t").perplexity == pytest.approx(whole.result("r", "t").perplexity)
    assert whole.result("r", "t").perplexity == pytest.approx(math.exp(-lp[np.arange(10), targets].mean()))


def test_scenarios_parse_like_llama_bench() -> None:
    assert parse_scenario("pp128-tg128") == (128, 128)
    assert parse_scenario("pp512") == (512, 1)
    assert parse_scenario("tg64") == (1, 64)
    assert parse_scenario("chat") is None
    with pytest.raises(ContractError):
        parse_scenario("fast")


def test_fixed_prompt_has_exact_length() -> None:
    assert fixed_prompt([1, 2, 3], 7) == [1, 2, 3, 1, 2, 3, 1]
    assert fixed_prompt(list(range(10)), 4) == [0, 1, 2, 3]
