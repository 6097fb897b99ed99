"""Width pruning (and width with depth): the student loads, and equals the teacher where nothing went."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from build_side.distill.config import StudentSpec
from build_side.distill.prune import channel_importance, prune_mlp
from build_side.distill.student import check_spec, load_student
from edge_agent.errors import DistillError


@pytest.fixture(scope="module")
def teacher(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[1, 20, 300, 4000, 42, 7], [5, 6, 77, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    return {"input_ids": ids, "attention_mask": mask, "targets": ids}


def test_keeping_every_channel_and_layer_reproduces_the_teacher(teacher, batch) -> None:
    full = teacher.config.intermediate_size
    student, info = load_student(StudentSpec(keep_layers=2, mlp_channels=full), teacher, batch)
    student.eval()
    assert info["mlp_channels"] == full and info["importance_kept"] == [1.0, 1.0]
    with torch.no_grad():
        assert torch.allclose(
            student(batch["input_ids"]).logits, teacher(batch["input_ids"]).logits, atol=1e-5
        )


def test_width_pruned_student_keeps_the_most_active_channels_and_reloads(teacher, batch, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    importance = channel_importance(teacher, batch)
    student, info = load_student(StudentSpec(mlp_channels=32), teacher, batch)
    assert student.config.intermediate_size == 32 and student.config.num_hidden_layers == 2
    for layer in student.model.layers:
        assert layer.mlp.gate_proj.weight.shape == (32, teacher.config.hidden_size)
        assert layer.mlp.down_proj.weight.shape == (teacher.config.hidden_size, 32)
    # layer 0 keeps its 32 most active channels, in order: the teacher's rows exactly
    kept = torch.sort(torch.topk(importance[0], 32).indices).values
    t_gate = teacher.model.layers[0].mlp.gate_proj.weight
    assert torch.equal(student.model.layers[0].mlp.gate_proj.weight, t_gate[kept])
    t_down = teacher.model.layers[0].mlp.down_proj.weight
    assert torch.equal(student.model.layers[0].mlp.down_proj.weight, t_down[:, kept])
    assert all(0.25 < m < 1.0 for m in info["importance_kept"])  # more than a uniform quarter of the mass
    # attention and embeddings are the teacher's
    assert torch.equal(
        student.model.layers[1].self_attn.q_proj.weight, teacher.model.layers[1].self_attn.q_proj.weight
    )
    student.save_pretrained(tmp_path / "s")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    with torch.no_grad():
        assert torch.allclose(
            again(batch["input_ids"]).logits, student.eval()(batch["input_ids"]).logits, atol=1e-5
        )


def test_depth_and_width_compose(teacher, batch) -> None:
    student, info = load_student(StudentSpec(layers=[1], mlp_channels=64), teacher, batch)
    importance = channel_importance(teacher, batch)
    kept = torch.sort(torch.topk(importance[1], 64).indices).values  # ranked on the teacher's layer 1
    assert info["kept_layers"] == [1] and student.config.num_hidden_layers == 1
    assert torch.equal(
        student.model.layers[0].mlp.up_proj.weight, teacher.model.layers[1].mlp.up_proj.weight[kept]
    )


def test_sizes_the_model_cannot_take_fail_before_any_work(teacher) -> None:
    with pytest.raises(DistillError, match="cannot keep 3 of 2 layers"):
        check_spec(StudentSpec(keep_layers=3), teacher.config)
    with pytest.raises(DistillError, match="cannot keep 129 MLP channels"):
        check_spec(StudentSpec(mlp_channels=129), teacher.config)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        StudentSpec(mlp_channels=0)
    with pytest.raises(DistillError, match="calibration"):
        load_student(StudentSpec(mlp_channels=8), teacher, None)


def test_importance_ignores_padding(teacher, batch) -> None:
    padded = dict(batch)
    padded["input_ids"] = batch["input_ids"].clone()
    padded["input_ids"][1, 4:] = 999  # other tokens under the padding mask change nothing
    for a, b in zip(channel_importance(teacher, batch), channel_importance(teacher, padded), strict=True):
        assert torch.allclose(a, b)
    with pytest.raises(DistillError):
        prune_mlp(teacher, 8, [])
