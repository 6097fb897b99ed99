"""The ship/no-ship verdict comes from the measured figures: a student under the bar fails it."""

from __future__ import annotations

import pytest

from build_side.distill.verdict import Bar, Figures, choose, judge

TEACHER = Figures(
    name="teacher", scores={"intent": 0.80, "command": 0.50}, decode_tok_s=100.0, model_rss_mb=200.0
)


def student(name: str, intent: float, command: float, tok_s: float, rss: float, speedup: float | None = None):
    return Figures(
        name=name,
        scores={"intent": intent, "command": command},
        decode_tok_s=tok_s,
        speedup=speedup,
        model_rss_mb=rss,
    )


def test_a_student_meeting_every_item_ships() -> None:
    v = judge(TEACHER, student("l10-w768", 0.76, 0.47, 230.0, 100.0, speedup=2.3), Bar())
    assert v.ship and all(v.checks.values())
    assert v.kept == pytest.approx({"intent": 0.95, "command": 0.94})
    assert v.line == (
        "SHIP: l10-w768: inference time -57%, memory -50%, 94% of task accuracy kept (intent 95%, command 94%)"
    )


def test_a_fixture_under_the_bar_gets_a_failing_verdict() -> None:
    # command keeps 0.45/0.50 = 90% < 92%; decode 1.8x < 2x (from tok/s: no bench figure); memory 70% > 60%
    v = judge(TEACHER, student("l20", 0.80, 0.45, 180.0, 140.0), Bar())
    assert not v.ship
    assert v.speedup == pytest.approx(1.8) and v.memory_ratio == pytest.approx(0.7)
    assert [c for c, ok in v.checks.items() if not ok] == [
        "keep command >= 92%",
        "decode >= 2x",
        "memory <= 60%",
    ]
    assert v.line.startswith(
        "NOT WORTH SHIPPING: l20: inference time -44%, memory -30%, 90% of task accuracy kept"
    )
    assert v.line.endswith("misses the bar on: keep command >= 92%, decode >= 2x, memory <= 60%")


def test_a_missing_figure_is_not_a_pass() -> None:
    v = judge(TEACHER, Figures(name="x", scores={"intent": 0.8, "command": 0.5}), Bar())
    assert not v.ship and v.speedup is None and v.memory_ratio is None


def test_choose_ships_the_leanest_passing_student_else_the_best_keeper() -> None:
    a = student("a", 0.78, 0.49, 250.0, 110.0)
    b = student("b", 0.77, 0.48, 260.0, 90.0)
    c = student("c", 0.20, 0.10, 900.0, 20.0)
    assert choose(TEACHER, [a, b, c], Bar()).student == "b"
    worse = [student("d", 0.70, 0.30, 300.0, 80.0), student("e", 0.60, 0.45, 300.0, 80.0)]
    v = choose(TEACHER, worse, Bar())
    assert v.student == "e" and not v.ship  # at worst d keeps 60% (command), e 75% (intent)
