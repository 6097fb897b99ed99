"""Merging LoRA adapters into the weights (convert --adapter, pipelines, finetune's merged/)."""

from __future__ import annotations

from pathlib import Path

import torch


def test_an_adapter_on_a_tied_lm_head_leaves_the_input_embeddings_alone(
    tiny_model_dir: Path, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The head and the embeddings share one tensor in the tiny model (as in SmolLM2): folding an LM-head
    update into it would change the model's inputs too, so the merge unties them first."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from build_side.adapters import merge_adapters

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    embed = base.get_input_embeddings().weight.detach().clone()
    head = base.lm_head.weight.detach().clone()
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["lm_head", "q_proj"]))
    torch.manual_seed(1)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a real update (B starts at zero)
    peft.save_pretrained(tmp_path / "adapter")

    merged_dir, digest = merge_adapters(tiny_model_dir, "0" * 64, {"head": tmp_path / "adapter"})
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    assert not merged.config.tie_word_embeddings
    assert torch.equal(merged.get_input_embeddings().weight, embed)
    assert not torch.allclose(merged.lm_head.weight, head)
    assert (merged_dir / "tokenizer.json").is_file()
    assert merge_adapters(tiny_model_dir, "0" * 64, {"head": tmp_path / "adapter"}) == (merged_dir, digest)
