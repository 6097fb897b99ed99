"""Train against the weights the int4 variant will run: onnxruntime's own blockwise int4 round trip.

A LoRA adapter learns a correction to the weights it sees. Trained on fp32 weights and then run on
the cpu-int4 base, it meets weights it never saw, and a task that needs exact answers loses a lot
(SmolLM2 commands: exact match 0.75 on fp32, 0.41 on int4). Here every linear weight (and the tied
embedding, which the builder quantizes along the same blocks) is replaced by its int4 version,
quantized with the same C++ kernel and settings the model builder uses (RTN, symmetric, block 32),
so the adapter learns around the quantization error: QLoRA's idea, for onnxruntime's int4 format
and on a CPU. Only the activations' int8 rounding at run time (accuracy level 4) is not simulated.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def int4_round_trip(weight: torch.Tensor, block_size: int = 32, symmetric: bool = True) -> torch.Tensor:
    """(out, in) weight -> the same weight after onnxruntime's MatMulNBits int4 quantization."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    w = weight.detach().float().T.contiguous().numpy()  # (K=in, N=out): how the ONNX MatMul holds it
    rows, cols = w.shape
    k_blocks = math.ceil(rows / block_size)
    padded = np.pad(w, ((0, k_blocks * block_size - rows), (0, 0))) if k_blocks * block_size != rows else w
    packed = np.zeros((cols, k_blocks, block_size // 2), dtype=np.uint8)
    scales = np.zeros((cols, k_blocks), dtype=np.float32)
    zero_points = np.zeros((cols, (k_blocks + 1) // 2), dtype=np.uint8)
    quantize_matmul_4bits(
        packed, np.ascontiguousarray(padded), scales, zero_points, block_size, cols, rows, symmetric
    )
    q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(cols, k_blocks, block_size).astype(np.float32)
    if symmetric:
        zero = np.float32(8)
    else:  # two 4-bit zero points per byte, low nibble first
        zp = np.stack([zero_points & 0x0F, zero_points >> 4], axis=-1).reshape(cols, -1)[:, :k_blocks]
        zero = zp.astype(np.float32)[..., None]
    dequant = ((q - zero) * scales[..., None]).reshape(cols, k_blocks * block_size)[:, :rows]  # (N, K)
    return torch.from_numpy(np.ascontiguousarray(dequant)).to(weight.dtype)


@torch.no_grad()
def quantize_base(model: Any, block_size: int = 32, symmetric: bool = True) -> int:
    """Round every linear weight and the input embedding through int4, in place; how many tensors."""
    seen: set[int] = set()
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    embeddings = model.get_input_embeddings()
    if embeddings is not None:
        weights.append(embeddings.weight)
    for weight in weights:
        if id(weight) in seen:  # a head tied to the embedding is one tensor
            continue
        seen.add(id(weight))
        weight.copy_(int4_round_trip(weight, block_size, symmetric))
    return len(seen)
