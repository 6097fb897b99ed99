"""Quality of the student against its teacher, in transformers (both full precision, same tokens).

- held-out text: perplexity of each, and the student's KL / top-1 agreement with the teacher, through
  the same metric code convert and bench use (`edge_agent.evaluation`), fed torch logits;
- held-out prompts (never trained on): on the teacher's answers, each model's perplexity and the
  student's agreement with the teacher's next-token choice;
- a task score where the recipe names one: the share of questions whose greedy answer contains an
  accepted answer (whole word, any case).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from build_side.distill.config import GenerationSettings
from build_side.distill.data import encode_record
from build_side.distill.loss import IGNORE
from build_side.distill.records import TeacherRecord
from build_side.distill.teachers import TransformersTeacher
from edge_agent.errors import DistillError
from edge_agent.evaluation import WindowSums, evaluate_quality, window_sums


class TorchLogits:
    """`edge_agent.evaluation.LogitsModel` over a transformers model."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.inference_mode()
    def sequence_logits(self, ids: list[int]) -> np.ndarray:
        return self.model(input_ids=torch.tensor([ids])).logits[0].float().numpy()  # (T, V)


@dataclass(frozen=True)
class PairQuality:
    tokens: int
    teacher_perplexity: float
    student_perplexity: float
    kl_divergence: float  # KL(teacher || student), mean per token
    top1_agreement: float  # share of positions where the student's top token is the teacher's


def text_quality(
    teacher: TransformersTeacher, student: TransformersTeacher, text: str, window: int = 256
) -> PairQuality:
    ref, cands = evaluate_quality(
        TorchLogits(teacher.model, teacher.tokenizer),
        {"student": TorchLogits(student.model, student.tokenizer)},
        text,
        window,
    )
    s = cands["student"]
    return PairQuality(s.tokens, ref.perplexity, s.perplexity, s.kl_divergence, s.top1_agreement)


def answer_quality(
    teacher: TransformersTeacher,
    student: TransformersTeacher,
    records: list[TeacherRecord],
    max_len: int = 512,
) -> PairQuality:
    """Scored on the answer tokens of held-out records, given the same prompt."""
    t_logits, s_logits = (
        TorchLogits(teacher.model, teacher.tokenizer),
        TorchLogits(student.model, student.tokenizer),
    )
    t_sums, s_sums = WindowSums(), WindowSums()
    for record in records:
        ex = encode_record(teacher.tokenizer, record, max_len)
        pos = np.array([i for i, t in enumerate(ex.targets) if t != IGNORE])
        if not len(pos):
            continue
        targets = np.array(ex.targets)[pos]
        ref = t_logits.sequence_logits(ex.inputs)[pos]
        t_sums += window_sums(ref, targets)
        s_sums += window_sums(s_logits.sequence_logits(ex.inputs)[pos], targets, ref)
    if not s_sums.tokens:
        raise DistillError("no held-out answers to score")
    return PairQuality(
        s_sums.tokens, t_sums.perplexity, s_sums.perplexity, s_sums.kl_divergence, s_sums.top1_agreement
    )


def read_task(path: Path) -> list[dict[str, Any]]:
    try:
        items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise DistillError(f"{path}: cannot read the task file ({exc})") from exc
    if not items or not all("question" in i and i.get("answers") for i in items):
        raise DistillError(f'{path}: each line needs "question" and a non-empty "answers" list')
    return items


def is_correct(answer: str, accepted: list[str]) -> bool:
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", answer, re.IGNORECASE) for a in accepted)


def task_score(
    model: TransformersTeacher, items: list[dict[str, Any]], max_new_tokens: int, batch_size: int = 8
) -> dict[str, Any]:
    """Greedy answers to every question; score = share containing an accepted answer."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    answers: list[str] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        answers += [c.text for c in model.complete([i["question"] for i in batch], settings)]
    correct = [is_correct(a, i["answers"]) for a, i in zip(answers, items, strict=True)]
    return {
        "score": sum(correct) / len(items),
        "correct": sum(correct),
        "total": len(items),
        "answers": [
            {"id": i.get("id"), "answer": a, "correct": c}
            for i, a, c in zip(items, answers, correct, strict=True)
        ],
    }


def as_dict(q: PairQuality) -> dict[str, Any]:
    return asdict(q)
