"""The distillation loss: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE, on answer tokens."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from build_side.distill.loss import IGNORE, distill_loss


@pytest.fixture
def logits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 11, generator=g)
    t = torch.randn(2, 5, 11, generator=g) * 3
    targets = torch.tensor([[IGNORE, IGNORE, 3, 4, 5], [IGNORE, 7, 8, IGNORE, IGNORE]])
    return s, t, targets


def by_hand_kl(s: torch.Tensor, t: torch.Tensor, T: float) -> float:
    """sum_v p_t(v) * (log p_t(v) - log p_s(v)), averaged over positions, times T^2."""
    p_t = torch.softmax(t / T, -1)
    per_pos = (p_t * (torch.log(p_t) - torch.log_softmax(s / T, -1))).sum(-1)
    return float(per_pos.mean()) * T * T


def test_kl_term_at_temperature(logits) -> None:
    s, t, targets = logits
    mask = targets != IGNORE
    for T in (1.0, 2.0, 4.0):
        out = distill_loss(s, t, targets, temperature=T, alpha=1.0)
        assert float(out.kl) == pytest.approx(by_hand_kl(s[mask], t[mask], T), rel=1e-5)
        assert float(out.loss) == pytest.approx(float(out.kl), rel=1e-6)


def test_ce_term_and_alpha_mix(logits) -> None:
    s, t, targets = logits
    mask = targets != IGNORE
    ce = float(F.cross_entropy(s[mask], targets[mask]))
    assert float(distill_loss(s, t, targets, 2.0, alpha=0.0).loss) == pytest.approx(ce, rel=1e-6)
    out = distill_loss(s, t, targets, 2.0, alpha=0.3)
    assert float(out.ce) == pytest.approx(ce, rel=1e-6)
    assert float(out.loss) == pytest.approx(0.3 * float(out.kl) + 0.7 * ce, rel=1e-6)


def test_identical_distributions_leave_only_ce_and_ignored_positions_do_not_count(logits) -> None:
    s, t, targets = logits
    same = distill_loss(s, s.clone(), targets, 2.0, alpha=0.5)
    assert float(same.kl) == pytest.approx(0.0, abs=1e-6)
    changed = s.clone()
    changed[targets == IGNORE] += 100.0  # prompt and padding positions: nothing should move
    assert float(distill_loss(changed, t, targets, 2.0, 0.5).loss) == pytest.approx(
        float(distill_loss(s, t, targets, 2.0, 0.5).loss), rel=1e-6
    )


def test_gradient_flows_to_student_only(logits) -> None:
    s, t, targets = logits
    s = s.clone().requires_grad_(True)
    distill_loss(s, t, targets, 2.0, 0.5).loss.backward()
    assert s.grad is not None and float(s.grad[targets == IGNORE].abs().sum()) == 0.0
    assert float(s.grad[targets != IGNORE].abs().sum()) > 0.0
    empty = torch.full_like(targets, IGNORE)
    assert float(distill_loss(s, t, empty, 2.0, 0.5).loss.detach()) == 0.0


def test_topk_loss_against_a_hand_computed_value() -> None:
    """One position, vocabulary 4, k = 2, T = 2, alpha = 0.5, worked out by hand."""
    import math

    from build_side.distill.loss import topk_distill_loss

    s = [1.0, 0.0, -1.0, 2.0]  # student logits
    T = 2.0
    # teacher stored top-2: ids 3 and 0 with log-probs ln 0.6 and ln 0.3 (the rest 0.1 dropped)
    lp = [math.log(0.6), math.log(0.3)]
    p = [math.exp(v / T) for v in lp]
    p = [v / sum(p) for v in p]  # renormalised at T: sqrt(.6), sqrt(.3) normalised
    z = sum(math.exp(v / T) for v in s)
    q = {i: math.exp(s[i] / T) / z for i in (3, 0)}
    kl = (p[0] * math.log(p[0] / q[3]) + p[1] * math.log(p[1] / q[0])) * T * T
    ce = -math.log(math.exp(s[3]) / sum(math.exp(v) for v in s))
    out = topk_distill_loss(
        torch.tensor([[s, s]]),
        torch.tensor([[[3, 0], [0, 1]]]),
        torch.tensor([[lp, lp]]),
        torch.tensor([[3, IGNORE]]),  # the second position is not learned
        T,
        0.5,
    )
    assert out.kl.item() == pytest.approx(kl, rel=1e-5)
    assert out.ce.item() == pytest.approx(ce, rel=1e-5)
    assert out.loss.item() == pytest.approx(0.5 * kl + 0.5 * ce, rel=1e-5)


def test_topk_loss_is_zero_kl_when_the_student_matches_the_full_teacher() -> None:
    from build_side.distill.loss import topk_distill_loss

    teacher = torch.randn(1, 3, 11)
    logp = torch.log_softmax(teacher, dim=-1)
    top = torch.topk(logp, 11, dim=-1)  # k = V: the full distribution
    out = topk_distill_loss(teacher.clone(), top.indices, top.values, torch.tensor([[1, 2, 3]]), 2.0, 1.0)
    assert out.kl.item() == pytest.approx(0.0, abs=1e-5)
