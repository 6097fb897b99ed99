"""LoRA adapters from the fine-tuning stage (PEFT folders) merged into the base weights before convert.

Merging gives plain weights the builder quantizes like any other model, so every variant carries the
adapter at no runtime cost. The merged folder is cached by the content of the base and the adapters,
so a second convert with the same inputs merges nothing. (Shipping adapters as separate
`.onnx_adapter` files is the other route: `slmops bundle --adapter` takes such files ready-made.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from build_side.fingerprint import dir_digest
from build_side.settings import cache_dir
from edge_agent.errors import ConvertError


def parse_adapter(text: str) -> tuple[str, Path]:
    """`NAME=PEFT_DIR` -> (name, folder holding adapter_config.json)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ConvertError(f"adapter {text!r}: expected NAME=PEFT_DIR")
    folder = Path(path).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise ConvertError(
            f"adapter {name!r}: {folder} is not a PEFT adapter folder (no adapter_config.json)"
        )
    return name, folder


def merged_digest(base_sha256: str, adapters: dict[str, Path]) -> str:
    h = hashlib.sha256(base_sha256.encode())
    for name in sorted(adapters):
        h.update(f"\0{name}\0{dir_digest(adapters[name])}".encode())
    return h.hexdigest()


def merge_adapters(base_dir: Path, base_sha256: str, adapters: dict[str, Path]) -> tuple[Path, str]:
    """Merge every adapter (in name order) into a copy of the base; returns (HF folder, its digest)."""
    digest = merged_digest(base_sha256, adapters)
    target = cache_dir() / "merged" / digest[:16]
    if (target / "hf" / "config.json").is_file():
        return target / "hf", digest
    from transformers import AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".merge-"))
    try:
        merge_into(base_dir, adapters, work / "hf")
        AutoTokenizer.from_pretrained(base_dir).save_pretrained(work / "hf")
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target / "hf", digest


def merge_into(base_dir: Path, adapters: dict[str, Path], out: Path) -> None:
    """Fold every adapter (in name order) into a full-precision copy of the base; write it to `out`
    (weights and config; the caller writes the tokenizer it wants)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    targets = {
        t
        for folder in adapters.values()
        for t in json.loads((folder / "adapter_config.json").read_text()).get("target_modules") or []
    }
    if "lm_head" in targets and getattr(model.config, "tie_word_embeddings", False):
        # Folding an update into a head tied to the input embeddings would change both: untie first.
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
        model.config.tie_word_embeddings = False
    for name in sorted(adapters):
        try:
            model = PeftModel.from_pretrained(model, str(adapters[name]), adapter_name=name)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ConvertError(f"adapter {name!r} does not fit {base_dir}: {exc}") from exc
        model = model.merge_and_unload()
    model.save_pretrained(out)


__all__ = ["merge_adapters", "merge_into", "merged_digest", "parse_adapter"]
