"""Student derivation: the chosen layers, carrying the teacher's own weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from build_side.distill.config import StudentSpec
from build_side.distill.student import block_candidates, derive_student, even_layers, load_student
from edge_agent.errors import DistillError


def test_even_layers_keep_both_ends() -> None:
    assert even_layers(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert even_layers(30, 12) == [0, 3, 5, 8, 11, 13, 16, 18, 21, 24, 26, 29]
    assert even_layers(4, 4) == [0, 1, 2, 3]
    assert even_layers(5, 1) == [4]
    with pytest.raises(DistillError):
        even_layers(3, 4)


@pytest.fixture(scope="module")
def teacher(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def test_derived_student_carries_the_kept_layers(teacher) -> None:
    student = derive_student(teacher, [1])
    assert student.config.num_hidden_layers == 1 and teacher.config.num_hidden_layers == 2
    t, s = teacher.state_dict(), student.state_dict()
    for name in ("self_attn.q_proj.weight", "self_attn.o_proj.weight", "mlp.down_proj.weight"):
        assert torch.equal(s[f"model.layers.0.{name}"], t[f"model.layers.1.{name}"])
        assert not torch.equal(s[f"model.layers.0.{name}"], t[f"model.layers.0.{name}"])
    assert torch.equal(s["model.layers.0.input_layernorm.weight"], t["model.layers.1.input_layernorm.weight"])
    assert torch.equal(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"])
    assert torch.equal(s["model.norm.weight"], t["model.norm.weight"])
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()  # still tied
    assert (
        student.model.embed_tokens.weight.data_ptr() != teacher.model.embed_tokens.weight.data_ptr()
    )  # a copy


def test_keeping_every_layer_reproduces_the_teacher(teacher) -> None:
    student = derive_student(teacher, [0, 1]).eval()
    ids = torch.tensor([[1, 20, 300, 4000, 42]])
    with torch.no_grad():
        assert torch.allclose(student(ids).logits, teacher(ids).logits, atol=1e-5)


def test_student_spec_is_one_of_the_two_ways(teacher) -> None:
    with pytest.raises(ValueError):
        StudentSpec(source="x", keep_layers=2)
    with pytest.raises(ValueError):
        StudentSpec()
    with pytest.raises(DistillError, match="distinct indices"):
        load_student(StudentSpec(layers=[0, 5]), teacher)
    _, info = load_student(StudentSpec(layers=[0]), teacher)
    assert info == {"kind": "derived", "teacher_layers": 2, "kept_layers": [0]}


def test_given_student_must_share_the_vocabulary(teacher, tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "other"
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=100,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    ).save_pretrained(other)
    with pytest.raises(DistillError, match="vocabulary"):
        load_student(StudentSpec(source=str(other)), teacher)


def test_block_candidates_keep_both_ends() -> None:
    cands = block_candidates(30, 12)
    assert len(cands) == 11 and cands[0] == [0, *range(19, 30)] and cands[-1] == [*range(11), 29]
    assert all(len(c) == 12 and c[0] == 0 and c[-1] == 29 for c in cands)
    with pytest.raises(DistillError):
        block_candidates(30, 1)


def test_block_selection_drops_the_layer_that_does_nothing(tiny_model_dir: Path) -> None:
    """A 4-layer teacher whose layer 2 adds nothing to the residual stream: keeping 3 layers, the
    block choice must drop exactly that one, and the student then matches the teacher exactly."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = base.config
    config.num_hidden_layers = 4
    torch.manual_seed(1)
    teacher = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        teacher.model.layers[2].self_attn.o_proj.weight.zero_()
        teacher.model.layers[2].mlp.down_proj.weight.zero_()
    ids = torch.randint(0, config.vocab_size, (2, 12))
    calibration = {
        "input_ids": ids[:, :-1],
        "attention_mask": torch.ones(2, 11, dtype=torch.long),
        "targets": ids[:, 1:],
    }

    student, info = load_student(StudentSpec(keep_layers=3, select="block"), teacher, calibration)
    assert info["kept_layers"] == [0, 1, 3]
    assert set(info["block_scores"]) == {"drop 1-1", "drop 2-2"}
    assert info["block_scores"]["drop 2-2"] == pytest.approx(0.0, abs=1e-6)
    assert info["block_scores"]["drop 1-1"] > 1e-3
    with torch.no_grad():
        assert torch.allclose(student.eval()(ids).logits, teacher(ids).logits, atol=1e-4)
    with pytest.raises(DistillError, match="calibration"):
        load_student(StudentSpec(keep_layers=3, select="block"), teacher)
