"""The quality metrics: perplexity, KL divergence and top-1 agreement on hand-checkable logits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.evaluation import QualityReport, evaluate_quality, token_windows, window_sums


def test_uniform_logits_have_perplexity_equal_to_vocab_size() -> None:
    logits = np.zeros((5, 7), dtype=np.float32)
    sums = window_sums(logits, np.array([0, 1, 2, 3, 4]))
    assert sums.perplexity == pytest.approx(7.0)
    assert sums.kl_divergence == 0 and sums.top1_agreement == 1.0


def test_kl_and_agreement_against_a_reference() -> None:
    ref = np.log(np.array([[0.9, 0.1], [0.2, 0.8]]))
    cand = np.log(np.array([[0.6, 0.4], [0.7, 0.3]]))
    sums = window_sums(cand, np.array([0, 1]), ref)
    expected_kl = (0.9 * math.log(0.9 / 0.6) + 0.1 * math.log(0.1 / 0.4)) + (
        0.2 * math.log(0.2 / 0.7) + 0.8 * math.log(0.8 / 0.3)
    )
    assert sums.kl_divergence == pytest.approx(expected_kl / 2)
    assert sums.top1_agreement == 0.5  # agree on row 0, not on row 1
    assert sums.perplexity == pytest.approx(math.exp(-(math.log(0.6) + math.log(0.3)) / 2))


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="targets"):
        window_sums(np.zeros((3, 4)), np.array([1, 2]))
    with pytest.raises(ValueError, match="reference"):
        window_sums(np.zeros((2, 4)), np.array([1, 2]), np.zeros((2, 5)))


def test_windows_cover_the_text_without_overlap() -> None:
    assert list(token_windows(list(range(10)), 4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(token_windows(list(range(9)), 4)) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # lone tail dropped
    assert list(token_windows(list(range(10)), 4, max_tokens=6)) == [[0, 1, 2, 3], [4, 5]]


class _Fixed:
    """A model whose next-token distribution is the same at every position."""

    def __init__(self, probs: list[float]) -> None:
        self.row = np.log(np.asarray(probs))

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 2 for c in text]

    def sequence_logits(self, ids: list[int]) -> np.ndarray:
        return np.tile(self.row, (len(ids), 1))


def test_evaluate_quality_compares_every_candidate_with_the_reference() -> None:
    ref, same, other = _Fixed([0.5, 0.5]), _Fixed([0.5, 0.5]), _Fixed([0.9, 0.1])
    ref_report, reports = evaluate_quality(ref, {"same": same, "other": other}, "abcdefghij", window=4)
    assert isinstance(ref_report, QualityReport) and ref_report.perplexity == pytest.approx(2.0)
    assert reports["same"].kl_divergence == pytest.approx(0.0) and reports["same"].perplexity_ratio == 1.0
    assert reports["other"].kl_divergence > 0.3
    assert ref_report.tokens == reports["other"].tokens == 7  # windows of 4, 4, 2 -> 3 + 3 + 1 positions
