"""The distillation loss: match the teacher's softened distribution, and its actual words.

    loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, teacher's tokens)

`_T` is softmax(logits / T). `topk_distill_loss` is the same loss when stage 1 stored only the
teacher's k most likely tokens per position (log-probs at T = 1): the teacher's distribution is its
top-k renormalised at temperature T, softmax(logp_k / T), and the student is scored on those k ids of
its full softmax; no second pass of the teacher is needed. A higher T shows the student more of the teacher's "dark knowledge" (how
it ranks the wrong tokens); the T^2 factor keeps the KL gradients on the same scale as the CE's as T
changes (Hinton et al., 2015). Both terms average over the answer tokens only (targets != IGNORE).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

IGNORE = -100


class DistillLoss(NamedTuple):
    loss: torch.Tensor  # what backward() sees
    kl: torch.Tensor  # T^2 * KL, per token
    ce: torch.Tensor  # cross-entropy on the teacher's tokens, per token


def distill_loss(
    student_logits: torch.Tensor,  # (B, L, V): position t predicts targets[:, t]
    teacher_logits: torch.Tensor,  # (B, L, V), same positions
    targets: torch.Tensor,  # (B, L) token ids, IGNORE where nothing is learned (prompt, padding)
    temperature: float,
    alpha: float,
) -> DistillLoss:
    mask = targets != IGNORE
    if not bool(mask.any()):
        zero = student_logits.sum() * 0.0  # keeps the graph, so backward() still works
        return DistillLoss(zero, zero.detach(), zero.detach())
    s = student_logits[mask].float()  # (N, V): N learned positions
    t = teacher_logits[mask].float()
    T = temperature
    kl = F.kl_div(
        F.log_softmax(s / T, dim=-1), F.log_softmax(t / T, dim=-1), log_target=True, reduction="batchmean"
    )
    kl = kl * (T * T)
    ce = F.cross_entropy(s, targets[mask])
    return DistillLoss(alpha * kl + (1.0 - alpha) * ce, kl.detach(), ce.detach())


def topk_distill_loss(
    student_logits: torch.Tensor,  # (B, L, V): position t predicts targets[:, t]
    topk_ids: torch.Tensor,  # (B, L, K) the teacher's k most likely ids at each position
    topk_logprobs: torch.Tensor,  # (B, L, K) their log-probs at T = 1
    targets: torch.Tensor,  # (B, L), IGNORE where nothing is learned
    temperature: float,
    alpha: float,
) -> DistillLoss:
    """alpha * T^2 * KL(top-k teacher_T || student_T on those ids) + (1 - alpha) * CE."""
    mask = targets != IGNORE
    if not bool(mask.any()):
        zero = student_logits.sum() * 0.0
        return DistillLoss(zero, zero.detach(), zero.detach())
    s = student_logits[mask].float()  # (N, V)
    ids = topk_ids[mask]  # (N, K)
    T = temperature
    p_log = F.log_softmax(topk_logprobs[mask].float() / T, dim=-1)  # teacher, renormalised over top-k
    q_log = F.log_softmax(s / T, dim=-1).gather(-1, ids)  # the student's log-probs of those ids
    kl = (p_log.exp() * (p_log - q_log)).sum(dim=-1).mean() * (T * T)
    ce = F.cross_entropy(s, targets[mask])
    return DistillLoss(alpha * kl + (1.0 - alpha) * ce, kl.detach(), ce.detach())
