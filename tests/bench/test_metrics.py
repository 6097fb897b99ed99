"""Metric functions: definitions of DESIGN.md section 8 on hand-computed figures."""

from __future__ import annotations

import numpy as np
import pytest

from bench.cases import fixed_prompt, parse_scenario
from bench.quality import score_windows
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
from edge_agent.evaluation import log_softmax


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
    # Uniform over 4 tokens: perplexity is exactly 4, whatever the targets; no reference, no KL.
    q = score_windows(lambda ids: np.zeros((len(ids), 4)), [0, 1, 2, 3], reference="r", text="t")
    assert q.tokens == 3 and q.perplexity == pytest.approx(4.0)
    assert q.kl_divergence is None and q.top1_agreement is None


def test_kl_and_top1_against_a_saved_reference(tmp_path) -> None:
    rng = np.random.default_rng(0)
    ids = list(range(9))
    ref_logits = rng.normal(size=(len(ids), 11))
    ref_path = tmp_path / "ref.npy"
    # Windows of 4 tokens: 3 windows (4 + 4 + 1 dropped) -> 3 + 3 = 6 scored positions.
    ref_q = score_windows(
        lambda w: ref_logits[w[0] : w[0] + len(w)], ids, "ref", "t", save_logits_path=ref_path, window=4
    )
    assert ref_q.tokens == 6 and ref_q.kl_divergence == 0.0 and ref_q.top1_agreement == 1.0
    other = ref_logits.copy()
    other[0] = other[0][::-1]  # position 0 predicts differently
    q = score_windows(
        lambda w: other[w[0] : w[0] + len(w)], ids, "ref", "t", ref_logits_path=ref_path, window=4
    )
    p, r = np.exp(log_softmax(ref_logits[0])), log_softmax(other[0])
    assert q.kl_divergence == pytest.approx(float((p * (np.log(p) - r)).sum()) / 6, rel=1e-5)
    assert q.top1_agreement == pytest.approx((5 + int(ref_logits[0].argmax() == other[0].argmax())) / 6)
    assert q.perplexity != ref_q.perplexity


def test_reference_with_other_positions_is_refused(tmp_path) -> None:
    ref_path = tmp_path / "ref.npy"
    score_windows(lambda w: np.zeros((len(w), 3)), [0, 1, 2], "r", "t", save_logits_path=ref_path)
    with pytest.raises(ValueError, match="positions"):
        score_windows(lambda w: np.zeros((len(w), 3)), [0, 1, 2, 1], "r", "t", ref_logits_path=ref_path)


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
