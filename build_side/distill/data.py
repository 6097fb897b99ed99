"""Teacher records -> token sequences the student trains on, and the batches drawn from them.

A sequence is the prompt exactly as the teacher saw it (same chat template and system message), then
the teacher's answer and EOS. Only the answer is learned: prompt targets are IGNORE. Batches are a
pure function of (seed, step, micro-batch, rank), so a resumed run sees exactly the batches an
uninterrupted one would have, without saving any data-loader state.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from build_side.distill.loss import IGNORE
from build_side.distill.records import TeacherRecord


def format_prompt(tokenizer: Any, prompt: str, chat: bool, system: str | None) -> tuple[str, bool]:
    """(text, templated): the prompt through the chat template when there is one and chat is on."""
    if not (chat and tokenizer.chat_template):
        return prompt, False
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), True


@dataclass(frozen=True)
class Example:
    id: str
    inputs: list[int]  # tokens 0..n-2 of the sequence
    targets: list[int]  # tokens 1..n-1, IGNORE over the prompt
    # the teacher's stored top-k at the answer positions (from position `topk_start` on), if any
    topk_ids: list[list[int]] | None = None
    topk_logprobs: list[list[float]] | None = None
    topk_start: int = 0


def encode_record(tokenizer: Any, record: TeacherRecord, max_len: int) -> Example:
    gen = record.generation
    text, templated = format_prompt(tokenizer, record.input, gen.get("chat", True), gen.get("system"))
    prompt_ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
    if record.output_ids is not None:  # the tokens the teacher generated, EOS included: no re-tokenizing
        seq = (prompt_ids + record.output_ids)[:max_len]
    else:
        answer_ids = tokenizer(record.teacher_output, add_special_tokens=False)["input_ids"]
        seq = (prompt_ids + answer_ids + [tokenizer.eos_token_id])[:max_len]
    # position t predicts seq[t+1]; the first answer token is predicted from the last prompt token
    targets = [tok if t + 1 >= len(prompt_ids) else IGNORE for t, tok in enumerate(seq[1:])]
    if record.topk_ids is None or record.topk_logprobs is None or record.output_ids is None:
        return Example(record.id, seq[:-1], targets)
    start = len(prompt_ids) - 1  # the position that predicts the first answer token
    n = max(0, len(seq) - 1 - start)
    return Example(
        record.id, seq[:-1], targets, record.topk_ids[:n], record.topk_logprobs[:n], topk_start=start
    )


def split_records(
    records: list[TeacherRecord], val_fraction: float
) -> tuple[list[TeacherRecord], list[TeacherRecord]]:
    """(train, val) by a hash of each id: stable when records are added, never depends on file order."""

    def bucket(r: TeacherRecord) -> float:
        return int(hashlib.sha256(r.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    val = [r for r in records if bucket(r) < val_fraction]
    train = [r for r in records if bucket(r) >= val_fraction]
    if not val and len(train) > 1:  # tiny sets: hold out one anyway
        val, train = train[-1:], train[:-1]
    return train, val


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, L) tensors: input_ids, attention_mask, targets (IGNORE on padding)."""
    length = max(len(e.inputs) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    targets = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.inputs)
        ids[i, :n] = torch.tensor(e.inputs)
        mask[i, :n] = 1
        targets[i, :n] = torch.tensor(e.targets)
    batch = {"input_ids": ids, "attention_mask": mask, "targets": targets}
    if examples and all(e.topk_ids for e in examples):  # stored teacher top-k: (B, L, K)
        k = len(examples[0].topk_ids[0])  # type: ignore[index]
        top_ids = torch.zeros((len(examples), length, k), dtype=torch.long)
        top_lp = torch.zeros((len(examples), length, k), dtype=torch.float32)
        for i, e in enumerate(examples):
            rows = len(e.topk_ids)  # type: ignore[arg-type]
            top_ids[i, e.topk_start : e.topk_start + rows] = torch.tensor(e.topk_ids)
            top_lp[i, e.topk_start : e.topk_start + rows] = torch.tensor(e.topk_logprobs)
        batch.update(topk_ids=top_ids, topk_logprobs=top_lp)
    return batch


@lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    return tuple(random.Random(f"{seed}:{epoch}").sample(range(n), n))


def batch_indices(n: int, batch_size: int, seed: int, draw: int) -> list[int]:
    """Example indices for the `draw`-th batch overall: epochs of shuffled passes, every example once per epoch."""
    out = []
    for p in range(draw * batch_size, (draw + 1) * batch_size):
        epoch, i = divmod(p, n)
        out.append(_epoch_order(n, seed, epoch)[i])
    return out


def get_batch(
    examples: list[Example],
    batch_size: int,
    seed: int,
    step: int,
    micro: int,
    accum: int,
    rank: int,
    world: int,
) -> dict[str, torch.Tensor]:
    draw = (step * accum + micro) * world + rank
    return collate([examples[i] for i in batch_indices(len(examples), batch_size, seed, draw)], pad_id=0)


def val_batches(examples: list[Example], batch_size: int, limit: int) -> list[dict[str, torch.Tensor]]:
    """The same fixed batches at every evaluation, so validation losses compare across steps."""
    chunks = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)][:limit]
    return [collate(c, pad_id=0) for c in chunks]
