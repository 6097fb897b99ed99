"""Vocabulary trimming: the trimmed tokenizer segments task text as the teacher's does (renumbered),
and the trimmed model equals the teacher on the kept tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from build_side.distill.vocab import (
    load_tokenizer_json,
    save_tokenizer,
    task_vocab,
    trim_model,
    trim_tokenizer,
)
from edge_agent.errors import DistillError

TEXTS = [
    "restart the agent on rack-a1",
    '{"action": "deploy", "target": "group:depot"}',
    "Classify the request.",
]


def test_trimmed_tokenizer_and_model_match_the_teacher_on_task_text(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    full = AutoTokenizer.from_pretrained(tiny_model_dir)
    used = {t for text in TEXTS for t in full(text, add_special_tokens=False)["input_ids"]}
    tok = load_tokenizer_json(tiny_model_dir)
    keep = task_vocab(tok, used, base_merges=100)
    assert used <= set(keep) and set(range(17)) <= set(keep)  # task tokens and every special token
    assert 256 + 17 <= len(keep) < 2000  # the byte symbols and a little more, not 49k
    save_tokenizer(tiny_model_dir, trim_tokenizer(tok, keep), tmp_path / "s")
    small = AutoTokenizer.from_pretrained(tmp_path / "s")
    new_id = {old: new for new, old in enumerate(keep)}
    for text in TEXTS:  # the same segmentation, renumbered
        ids = full(text, add_special_tokens=False)["input_ids"]
        assert small(text, add_special_tokens=False)["input_ids"] == [new_id[i] for i in ids]
        assert small.decode([new_id[i] for i in ids]) == text
    unseen = "reboot zeppelin-77 now"  # new words still encode, in smaller pieces, and decode back
    assert small.decode(small(unseen, add_special_tokens=False)["input_ids"]) == unseen
    assert small.convert_tokens_to_ids("<|im_end|>") == full.convert_tokens_to_ids("<|im_end|>")

    teacher = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    student = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    trim_model(student, keep)
    assert student.config.vocab_size == len(keep) and student.lm_head.weight.shape[0] == len(keep)
    ids = full(TEXTS[0], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        t = teacher(torch.tensor([ids])).logits[..., keep]
        s = student(torch.tensor([[new_id[i] for i in ids]])).logits
    assert torch.allclose(s, t, atol=1e-5)
    student.save_pretrained(tmp_path / "s")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    assert again.config.vocab_size == len(keep)


def test_an_id_outside_the_vocabulary_is_an_error(tiny_model_dir: Path) -> None:
    with pytest.raises(DistillError, match="not in the tokenizer"):
        task_vocab(load_tokenizer_json(tiny_model_dir), [10**7])
