"""Bytes of weights a decode step reads: the denominator of the physical decode bound.

Every weight is read once per generated token except an input-embedding table that is not also the
LM head: a lookup reads one row of it. Each format answers from its own metadata without loading
tensors (ONNX initializers with external data, GGUF tensor infos, PyTorch parameters).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

LOOKUP_OPS = {"Gather", "GatherBlockQuantized"}
PASS_THROUGH_OPS = {"Transpose", "Reshape", "Cast", "Identity", "Squeeze", "Unsqueeze"}


def folder_size(path: Path) -> int:
    """Size on disk of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _initializer_bytes(init) -> int:  # onnx.TensorProto
    import numpy as np
    from onnx import helper

    for entry in init.external_data:
        if entry.key == "length":
            return int(entry.value)
    if init.raw_data:
        return len(init.raw_data)
    count = int(np.prod(init.dims)) if init.dims else 1
    return count * np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize


def onnx_weight_bytes_per_token(model_path: Path) -> int:
    """Initializer bytes of an ONNX model, less tables only ever used by lookups (embeddings)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers[name].append((node, i))

    def lookup_only(name: str, depth: int = 0) -> bool:
        uses = consumers.get(name, [])
        if not uses or depth > 4:
            return False
        for node, index in uses:
            if node.op_type in LOOKUP_OPS and index != 1:  # input 1 is the indices
                continue
            if node.op_type in PASS_THROUGH_OPS and all(lookup_only(o, depth + 1) for o in node.output):
                continue
            return False
        return True

    total = 0
    for init in graph.initializer:
        if not lookup_only(init.name):
            total += _initializer_bytes(init)
    return total


def gguf_weight_bytes_per_token(path: Path) -> int:
    """Tensor bytes of a GGUF file, less `token_embd` when a separate `output` (LM head) exists."""
    try:
        from gguf import GGUFReader
    except ImportError:  # the gguf package is optional: the file size is a fair upper bound
        return Path(path).stat().st_size
    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(str(path)).tensors}
    total = sum(tensors.values())
    if "output.weight" in tensors and "token_embd.weight" in tensors:
        total -= tensors["token_embd.weight"]
    return total


def torch_weight_bytes_per_token(model) -> int:  # transformers PreTrainedModel
    """Unique parameter bytes, less the input embedding when it is not tied to the LM head."""
    seen: dict[int, int] = {}
    for p in list(model.parameters()) + list(model.buffers()):
        seen[p.data_ptr()] = p.numel() * p.element_size()
    total = sum(seen.values())
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    if head is None or head.weight.data_ptr() != embed.data_ptr():
        total -= embed.numel() * embed.element_size()
    return total


__all__ = [
    "folder_size",
    "gguf_weight_bytes_per_token",
    "onnx_weight_bytes_per_token",
    "torch_weight_bytes_per_token",
]
