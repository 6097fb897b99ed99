"""The trainer on the tiny model: loss goes down, runs resume exactly, early stopping, QLoRA's error."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from build_side.finetune import finetune
from build_side.finetune.trainer import get_lr
from edge_agent.errors import TrainingError
from tests.finetune.conftest import tiny_config


def test_lora_lowers_validation_loss_and_writes_its_record(
    tiny_model_dir: Path, task_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    config = tiny_config(task_file, merge=True, train__gradient_checkpointing=True)
    result = finetune(config, tiny_model_dir, out, progress=False)
    assert result.before is not None and result.after is not None
    assert result.after["metric"] == "accuracy" and result.before["examples"] == result.val_examples
    assert result.val_examples == 12 and result.train_examples == 60  # 1/6 of each colour held out
    val_losses = [h["val_loss"] for h in result.history]
    assert [h["step"] for h in result.history] == [4, 8, 12]
    assert val_losses[-1] < val_losses[0] and result.best_val_loss < 0.5 * result.before["loss"]
    assert result.after["loss"] == pytest.approx(result.best_val_loss, abs=1e-3)
    record = json.loads((out / "finetune.json").read_text())
    assert record["config"]["train"]["lr"] == 2e-2 and record["result"]["best_step"] == result.best_step
    assert (out / "adapter" / "adapter_config.json").is_file()
    # the merged model answers as base + adapter
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter")
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)


def test_an_interrupted_run_resumes_exactly(tiny_model_dir: Path, task_file: Path, tmp_path: Path) -> None:
    config = tiny_config(
        task_file, train__max_steps=6, train__eval_every=2, lora__dropout=0.1, eval__before=False
    )
    straight = finetune(config, tiny_model_dir, tmp_path / "a", evaluate_after=False, progress=False)
    first = finetune(
        config, tiny_model_dir, tmp_path / "b", stop_after=3, evaluate_after=False, progress=False
    )
    assert first.interrupted and first.steps == 3
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == [
        "step-000002.pt",
        "step-000003.pt",
    ]
    resumed = finetune(
        config, tiny_model_dir, tmp_path / "b", resume=True, evaluate_after=False, progress=False
    )
    assert resumed.resumed_from == 3 and resumed.steps == 6 and not resumed.interrupted
    assert resumed.history == straight.history
    a = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    with pytest.raises(TrainingError, match=r"other settings \(train\.lr\)"):
        changed = tiny_config(
            task_file, train__max_steps=6, train__eval_every=2, lora__dropout=0.1, train__lr=1e-3
        )
        finetune(changed, tiny_model_dir, tmp_path / "b", resume=True, progress=False)
    with pytest.raises(TrainingError, match="nothing to resume"):
        finetune(config, tiny_model_dir, tmp_path / "empty", resume=True, progress=False)


def test_early_stopping_and_full_fine_tuning(tiny_model_dir: Path, task_file: Path, tmp_path: Path) -> None:
    # min_delta so large that nothing after the first validation counts as better
    config = tiny_config(
        task_file, method="full", train__lr=1e-3, train__max_steps=20, train__eval_every=2,
        train__patience=2, train__min_delta=100.0, eval__before=False,
    )  # fmt: skip
    result = finetune(config, tiny_model_dir, tmp_path / "full", evaluate_after=False, progress=False)
    assert result.stopped_early and result.steps == 6 and result.best_step == 2
    assert (tmp_path / "full" / "model" / "config.json").is_file()
    assert (tmp_path / "full" / "model" / "tokenizer.json").is_file()


def test_cosine_schedule_with_warmup() -> None:
    lrs = [get_lr(s, max_steps=100, warmup=10, lr=1.0, min_lr=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_qlora_says_clearly_what_it_needs(tiny_model_dir: Path, task_file: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"qlora .* bitsandbytes, which needs a CUDA GPU.*--method lora"):
        finetune(tiny_config(task_file, method="qlora"), tiny_model_dir, tmp_path / "q", progress=False)
