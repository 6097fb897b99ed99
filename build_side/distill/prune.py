"""Width pruning: keep the MLP channels that matter on the task, as Minitron ranks them.

A channel of a gated MLP (Llama, SmolLM2) is one row of gate_proj and up_proj and one column of
down_proj. Its importance is the mean magnitude of its activation, act(gate(x)) * up(x), over the
real tokens of task sequences run through the teacher; each layer keeps its `keep` most important
channels, in their original order, so a student keeping them all computes exactly what the teacher
computes. Depth pruning (`student.derive_student`) and width pruning compose: layers first, then the
channels of the kept layers, ranked on the teacher.
"""

from __future__ import annotations

from typing import Any

import torch

from edge_agent.errors import DistillError


def _mlps(model: Any) -> list[Any]:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not all(
        hasattr(layer.mlp, n) for layer in layers for n in ("gate_proj", "up_proj", "down_proj")
    ):
        raise DistillError(
            f"width pruning needs a gated MLP (gate_proj, up_proj, down_proj) per layer; "
            f"{type(model).__name__} has none"
        )
    return [layer.mlp for layer in layers]


def check_channels(config: Any, keep: int) -> None:
    """A clear error before any work for a width the model cannot take."""
    total = int(config.intermediate_size)
    if not 1 <= keep <= total:
        raise DistillError(f"cannot keep {keep} MLP channels: the model has 1..{total} per layer")


@torch.no_grad()
def channel_importance(model: Any, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, a (intermediate_size,) tensor: mean |activation| of each channel over the batch's
    real tokens (attention_mask 1)."""
    mlps = _mlps(model)
    mask = batch["attention_mask"].bool()
    sums: list[torch.Tensor] = [torch.zeros(m.down_proj.in_features) for m in mlps]
    hooks = []
    for i, mlp in enumerate(mlps):

        def hook(module: Any, inputs: tuple[torch.Tensor, ...], i: int = i) -> None:
            sums[i] += inputs[0][mask].abs().float().sum(dim=0).cpu()

        hooks.append(mlp.down_proj.register_forward_pre_hook(hook))
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for h in hooks:
            h.remove()
    tokens = max(1, int(mask.sum()))
    return [s / tokens for s in sums]


def _slice_linear(linear: torch.nn.Linear, index: torch.Tensor, dim: int) -> torch.nn.Linear:
    weight = linear.weight.data.index_select(dim, index).clone()
    out_f, in_f = weight.shape
    new = torch.nn.Linear(in_f, out_f, bias=linear.bias is not None, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.data if dim == 1 else linear.bias.data.index_select(0, index))
    return new


def prune_mlp(model: Any, keep: int, importance: list[torch.Tensor]) -> dict[str, Any]:
    """Keep the `keep` most important channels of every layer's MLP, in place; returns what was kept
    (a summary: the share of importance mass kept per layer)."""
    check_channels(model.config, keep)
    mlps = _mlps(model)
    if len(importance) != len(mlps):
        raise DistillError(f"importance for {len(importance)} layers, the model has {len(mlps)}")
    kept_mass = []
    for mlp, score in zip(mlps, importance, strict=True):
        index = torch.sort(torch.topk(score, keep).indices).values
        kept_mass.append(round(float(score[index].sum() / score.sum().clamp_min(1e-12)), 4))
        mlp.gate_proj = _slice_linear(mlp.gate_proj, index, 0)
        mlp.up_proj = _slice_linear(mlp.up_proj, index, 0)
        mlp.down_proj = _slice_linear(mlp.down_proj, index, 1)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = keep
    model.config.intermediate_size = keep
    return {"mlp_channels": keep, "importance_kept": kept_mass}
