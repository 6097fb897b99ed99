"""The process's memory, and what a model variant needs: for /metrics, the bench record and the
check that refuses a model too large for free memory before it loads.

A device runs the agent beside its own workload, so a model that would push it into swap (or the OOM
killer) is refused with the figures, while the model already serving keeps serving.
"""

from __future__ import annotations

import json
import math
import resource
import sys
from pathlib import Path

import psutil

from edge_agent.errors import MemoryInsufficientError

MB = 2**20
RUNTIME_OVERHEAD_MB = 96  # onnxruntime + tokenizer + arena slack, measured loosely on CPU


def rss_mb() -> float:
    """Resident set of this process now, in MiB."""
    return psutil.Process().memory_info().rss / MB


def peak_rss_mb() -> float:
    """Peak resident set of this process so far, in MiB.

    Linux: VmHWM of this process's address space. Not ru_maxrss: that one survives fork and exec,
    so a child started by a large parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / MB if sys.platform == "darwin" else rss / 1024


def resident_split_mb() -> dict[str, float]:
    """This process's resident memory split (Linux): `anon` (heap, arenas: only swap can take it) and
    `file` (pages of mapped files such as a memory-mapped weight file: the kernel can drop them)."""
    split = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                split[key[3:].lower()] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return split


def available_mb() -> int:
    """Memory the kernel can give without swapping (MemAvailable), in MiB."""
    return psutil.virtual_memory().available // MB


def estimate_model_mb(variant_dir: Path, device: str = "cpu", max_length: int | None = None) -> int:
    """Weights + a full KV cache at `max_length` (default: the context) + one row of logits + runtime
    overhead, +10%. The build side writes it into each variant's `min_memory_mb`."""
    config = json.loads((Path(variant_dir) / "genai_config.json").read_text())["model"]
    decoder = config["decoder"]
    weights = sum(f.stat().st_size for f in Path(variant_dir).iterdir() if ".onnx" in f.name)
    context = int(config.get("context_length", max_length or 2048))
    length = min(max_length, context) if max_length else context
    item = 2 if device != "cpu" else 4  # fp16 activations on GPUs, fp32 on CPU
    kv = (
        2
        * decoder["num_hidden_layers"]
        * decoder["num_key_value_heads"]
        * decoder["head_size"]
        * length
        * item
    )
    logits = int(config.get("vocab_size", 0)) * 4
    return math.ceil((weights + kv + logits) * 1.1 / MB) + RUNTIME_OVERHEAD_MB


def check_fits(what: str, need_mb: int, reserve_mb: int = 0) -> None:
    """Refuse `what` before it loads when it needs more than is free, less `reserve_mb` kept for the
    device's own work."""
    free = available_mb()
    if need_mb + reserve_mb > free:
        kept = f" ({reserve_mb} MB of it kept for this device's own work)" if reserve_mb else ""
        raise MemoryInsufficientError(f"{what} needs {need_mb} MB, {free} MB free{kept}")


__all__ = [
    "MB",
    "RUNTIME_OVERHEAD_MB",
    "available_mb",
    "check_fits",
    "estimate_model_mb",
    "peak_rss_mb",
    "resident_split_mb",
    "rss_mb",
]
