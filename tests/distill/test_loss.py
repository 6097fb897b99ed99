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
