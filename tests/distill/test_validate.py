"""Validation: each kind of unfit teacher output is caught, and only that kind."""

from __future__ import annotations

from build_side.distill.config import ValidationSettings
from build_side.distill.records import TeacherRecord
from build_side.distill.validate import repeated_ngram_fraction, validate


def rec(id_: str, text: str, finish: str = "stop") -> TeacherRecord:
    return TeacherRecord(
        id=id_, input="q", teacher_output=text, finish_reason=finish, generation={}, teacher={}
    )


def test_each_filter_catches_its_kind() -> None:
    records = [
        rec("ok1", "Paris is the capital of France."),
        rec("empty", "   "),
        rec("trunc", "The answer starts well but then", finish="length"),
        rec("long", "x" * 3000),
        rec("loop", "I think so. " + "the cat sat down " * 10),
        rec("dup", "  paris is the capital   of France. "),
        rec("ok2", "Water boils at 100 degrees Celsius at sea level."),
    ]
    result = validate(records, ValidationSettings(max_chars=2000))
    assert [r.id for r in result.kept] == ["ok1", "ok2"]
    assert result.rejected == {
        "empty": ["empty"],
        "truncated": ["trunc"],
        "too_long": ["long"],
        "repetitive": ["loop"],
        "duplicate": ["dup"],
    }
    assert result.counts() == {
        "total": 7,
        "kept": 2,
        "empty": 1,
        "truncated": 1,
        "too_long": 1,
        "repetitive": 1,
        "duplicate": 1,
    }


def test_filters_can_be_relaxed() -> None:
    records = [rec("t", "cut short", finish="length"), rec("d1", "same"), rec("d2", "same")]
    result = validate(records, ValidationSettings(drop_truncated=False, drop_duplicates=False))
    assert [r.id for r in result.kept] == ["t", "d1", "d2"]


def test_loop_detector_separates_loops_from_prose() -> None:
    prose = "A volcano is an opening in the crust where molten rock, ash and gases escape from below."
    assert repeated_ngram_fraction(prose, 4) == 0.0
    assert repeated_ngram_fraction("go go go go go go go go", 4) > 0.7
    assert repeated_ngram_fraction("short", 4) == 0.0
