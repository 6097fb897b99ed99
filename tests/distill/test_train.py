"""Stage 2 on a tiny teacher: validation loss goes down, and an interrupted run resumes exactly."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from build_side.distill.config import StudentSpec, TrainSettings
from build_side.distill.records import TeacherRecord
from build_side.distill.train import get_lr, train
from edge_agent.errors import DistillError

ANSWERS = [
    "The sky is blue because air scatters blue light more than red light.",
    "Water boils at one hundred degrees at sea level.",
    "Plants turn sunlight, water and air into sugar.",
    "A week has seven days.",
]


def records(n: int = 24) -> list[TeacherRecord]:
    return [
        TeacherRecord(
            id=f"r{i}",
            input=f"Question {i}: tell me a fact.",
            teacher_output=ANSWERS[i % len(ANSWERS)],
            finish_reason="stop",
            generation={"chat": False},  # no chat template: short sequences, a fast test
            teacher={"kind": "test"},
        )
        for i in range(n)
    ]


def settings(**over) -> TrainSettings:
    base = dict(
        max_steps=6,
        batch_size=2,
        grad_accum=2,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        eval_interval=3,
        eval_batches=2,
        checkpoint_interval=2,
        val_fraction=0.2,
        max_seq_len=64,
        seed=7,
    )
    return TrainSettings(**{**base, **over})


def test_lr_schedule_warms_up_then_follows_a_cosine() -> None:
    cfg = settings(max_steps=12, warmup_steps=2, learning_rate=1.0, min_lr=0.1)
    lrs = [get_lr(s, cfg) for s in range(13)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0) and lrs[2] == pytest.approx(1.0)
    assert lrs[7] == pytest.approx(0.55)  # half-way through the cosine
    assert lrs[12] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))


def test_short_run_lowers_validation_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(
        records(),
        tiny_model_dir,
        StudentSpec(keep_layers=1),
        settings(max_steps=16, batch_size=4, grad_accum=1, eval_interval=8),
        out,
        context={"teacher": {"kind": "test"}},
    )
    assert result.finished and result.steps == 16
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(val) == 3  # steps 0, 8 and the end
    assert val[-1] < 0.8 * val[0]
    assert [r["step"] for r in rows if "lr" in r] == list(range(1, 17))

    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(result.student_dir)
    assert student.config.num_hidden_layers == 1
    cfg = json.loads((result.student_dir / "distill_config.json").read_text())
    assert cfg["student"]["kept_layers"] == [1] and cfg["train"]["alpha"] == 0.5
    assert cfg["teacher"] == {"kind": "test"} and cfg["records"]["val"] >= 1
    assert cfg["final"]["val"]["loss"] == pytest.approx(result.val_loss)
    assert not (out / "checkpoint").exists()  # done: the checkpoint is no longer needed


def test_interrupted_run_resumes_to_the_same_student(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = StudentSpec(keep_layers=1)
    whole = train(records(), tiny_model_dir, spec, settings(), tmp_path / "whole")

    cut = tmp_path / "cut"
    first = train(records(), tiny_model_dir, spec, settings(), cut, stop_after=3)  # "killed" after step 3
    assert not first.finished and first.steps == 3
    assert json.loads((cut / "checkpoint" / "state.json").read_text())["step"] == 2  # last checkpoint
    with pytest.raises(DistillError, match="different settings"):
        train(records(), tiny_model_dir, spec, settings(alpha=0.9), cut)
    resumed = train(records(), tiny_model_dir, spec, settings(), cut)
    assert resumed.finished and resumed.steps == 6

    from safetensors.torch import load_file

    a, b = (
        load_file(whole.student_dir / "model.safetensors"),
        load_file(resumed.student_dir / "model.safetensors"),
    )
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    steps = [
        json.loads(line)["step"] for line in (cut / "metrics.jsonl").read_text().splitlines() if "lr" in line
    ]
    assert steps == [1, 2, 3, 4, 5, 6]  # step 3 was redone, and logged once


def test_training_from_stored_topk_needs_no_teacher_pass_and_resumes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Records with the teacher's top-k train a width-and-depth-pruned student; a cut run resumes to the
    same weights; the loss is the top-k one (its KL is computed on the stored log-probs)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = []
    for r in records(16):
        ids = tok(r.teacher_output, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        top = [[t, (t + 1) % 100, (t + 2) % 100] for t in ids]
        rows.append(
            r.model_copy(
                update={"output_ids": ids, "topk_ids": top, "topk_logprobs": [[-0.2, -2.0, -3.0]] * len(ids)}
            )
        )
    spec = StudentSpec(keep_layers=1, mlp_channels=64)
    whole = train(rows, tiny_model_dir, spec, settings(), tmp_path / "whole")
    cut = tmp_path / "cut"
    assert not train(rows, tiny_model_dir, spec, settings(), cut, stop_after=3).finished
    resumed = train(rows, tiny_model_dir, spec, settings(), cut)
    from safetensors.torch import load_file

    a, b = (
        load_file(whole.student_dir / "model.safetensors"),
        load_file(resumed.student_dir / "model.safetensors"),
    )
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert a["model.layers.0.mlp.gate_proj.weight"].shape[0] == 64
    cfg = json.loads((whole.student_dir / "distill_config.json").read_text())
    assert cfg["student"]["mlp_channels"] == 64 and cfg["student"]["kept_layers"] == [1]


def test_a_task_vocabulary_student_trains_and_ships_its_trimmed_tokenizer(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = []
    for r in records(12):
        ids = tok(r.teacher_output, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        top = [[t, 40000 + t % 100] for t in ids]  # the second candidate lies outside the task's tokens
        rows.append(
            r.model_copy(
                update={"output_ids": ids, "topk_ids": top, "topk_logprobs": [[-0.1, -2.4]] * len(ids)}
            )
        )
    spec = StudentSpec(keep_layers=1, vocab="task", vocab_base_merges=0)
    done = train(rows, tiny_model_dir, spec, settings(max_steps=2, grad_accum=1), tmp_path / "v")
    student = AutoModelForCausalLM.from_pretrained(done.student_dir)
    small = AutoTokenizer.from_pretrained(done.student_dir)
    assert student.config.vocab_size == len(small) < 1000
    text = ANSWERS[0]
    assert small.decode(small(text, add_special_tokens=False)["input_ids"]) == text
    cfg = json.loads((done.student_dir / "distill_config.json").read_text())
    assert cfg["student"]["vocab_size"] == student.config.vocab_size
    with pytest.raises(DistillError, match="needs the teacher's stored top-k"):
        train(records(12), tiny_model_dir, spec, settings(max_steps=2), tmp_path / "no-topk")
