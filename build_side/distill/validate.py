"""Which teacher outputs are fit to learn from. A student copies its teacher's failures too.

Each record gets the first reason that rejects it, checked in this order: empty, truncated (ran
into the token limit without EOS), too long, repetitive (one word n-gram looping), duplicate (the same
normalised answer as an earlier kept record). Pure functions over records: no model needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from build_side.distill.config import ValidationSettings
from build_side.distill.records import TeacherRecord

REASONS = ("empty", "truncated", "too_long", "repetitive", "duplicate")


def repeated_ngram_fraction(text: str, n: int) -> float:
    """Share of word n-grams that repeat an earlier one: 0 for fresh text, near 1 for a loop."""
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def reject_reason(record: TeacherRecord, settings: ValidationSettings) -> str | None:
    """Why this one record is unfit on its own (duplicates need the others: see `validate`)."""
    text = record.teacher_output.strip()
    if len(text) < settings.min_chars:
        return "empty"
    if settings.drop_truncated and record.finish_reason == "length":
        return "truncated"
    if len(text) > settings.max_chars:
        return "too_long"
    if repeated_ngram_fraction(text, settings.ngram) > settings.max_repeated_ngram_fraction:
        return "repetitive"
    return None


@dataclass
class ValidationResult:
    kept: list[TeacherRecord]
    rejected: dict[str, list[str]] = field(default_factory=lambda: {r: [] for r in REASONS})  # reason -> ids

    @property
    def total(self) -> int:
        return len(self.kept) + sum(len(v) for v in self.rejected.values())

    def counts(self) -> dict[str, int]:
        return {"total": self.total, "kept": len(self.kept), **{r: len(v) for r, v in self.rejected.items()}}


def validate(records: list[TeacherRecord], settings: ValidationSettings) -> ValidationResult:
    result = ValidationResult(kept=[])
    seen: set[str] = set()
    for record in records:
        reason = reject_reason(record, settings)
        key = _normalise(record.teacher_output)
        if reason is None and settings.drop_duplicates and key in seen:
            reason = "duplicate"
        if reason:
            result.rejected[reason].append(record.id)
        else:
            seen.add(key)
            result.kept.append(record)
    return result
