"""Scoring on the validation set: loss and perplexity always; accuracy or exact match with labels.

Accuracy is for classifiers (every response is its record's label): the first line of the greedy
answer, lower-cased and without trailing punctuation, must equal the label. Exact match is for
generators whose records carry labels: the stripped answer must equal the stripped response.
Data without labels is scored by perplexity of the responses alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from build_side.finetune.data import IGNORE, Encoded, Example, prompt_text


def resolve_metric(metric: str, examples: list[Example]) -> str:
    if metric != "auto":
        return metric
    if not examples or any(e.label is None for e in examples):
        return "perplexity"
    if all(normalize(e.response) == normalize(e.label or "") for e in examples):
        return "accuracy"
    return "exact_match"


def normalize(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return " ".join(first.lower().split()).rstrip(".!?:;,")


def is_hit(metric: str, answer: str, example: Example) -> bool:
    if metric == "accuracy":
        return normalize(answer) == normalize(example.label or "")
    return answer.strip() == example.response.strip()


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad, so every answer ends at the last position and only the tail needs logits."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, width - n :] = torch.tensor(e.input_ids)
        labels[row, width - n :] = torch.tensor(e.labels)
        mask[row, width - n :] = 1
    answer = max(len(e.input_ids) - e.prompt_len for e in batch)
    keep = min(answer + 1, width)  # the answer's positions and the one before its first token
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "keep": torch.tensor(keep)}


def token_losses(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of the answer tokens' cross-entropy, number of answer tokens) for one batch.

    Logits are computed for the last `keep` positions only: the answers sit there (left padding),
    and the 49k-wide output layer over every prompt token would cost a fifth of the step.
    """
    device = next(model.parameters()).device
    ids, mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
    keep = int(batch["keep"])
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens only
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=keep)
    logits = out.logits[:, :-1, :].float()  # (B, keep-1, V): position t predicts token t+1
    targets = labels[:, -keep + 1 :]  # (B, keep-1)
    n = int((targets != IGNORE).sum())
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return loss, n


@torch.no_grad()
def validation_loss(model: Any, data: list[Encoded], pad_id: int, batch_size: int = 16) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        loss, n = token_losses(model, collate(data[i : i + batch_size], pad_id))
        total, count = total + float(loss), count + n
    model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def generate_answers(
    model: Any, tokenizer: Any, examples: list[Example], max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """Greedy answers to each example's prompt, in left-padded batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers: list[str] = []
    try:
        for i in range(0, len(examples), batch_size):
            texts = [prompt_text(tokenizer, e) for e in examples[i : i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            answers += [a.strip() for a in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers


def evaluate(
    model: Any,
    tokenizer: Any,
    data: list[Encoded],
    metric: str,
    max_new_tokens: int,
    max_examples: int | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Loss, perplexity and, for labelled data, accuracy or exact match, with a few samples."""
    data = data[:max_examples] if max_examples else data
    loss = validation_loss(model, data, tokenizer.pad_token_id, batch_size)
    scores: dict[str, Any] = {
        "examples": len(data),
        "loss": round(loss, 4),
        "perplexity": round(math.exp(loss), 3),
    }
    if metric in ("accuracy", "exact_match"):
        examples = [e.example for e in data if e.example is not None]
        answers = generate_answers(model, tokenizer, examples, max_new_tokens, batch_size)
        hits = [is_hit(metric, a, e) for a, e in zip(answers, examples, strict=True)]
        scores[metric] = round(sum(hits) / max(len(hits), 1), 4)
        scores["samples"] = [
            {"where": e.where, "expected": e.response, "answer": a, "ok": ok}
            for e, a, ok in list(zip(examples, answers, hits, strict=True))[:5]
        ]
    scores["metric"] = metric
    return scores
