"""Is a task student worth shipping? One verdict from the measured figures, against a stated bar.

The bar (issue: distillation that ships): on the held-out task set the student's int4 variant keeps
at least `keep` of the teacher int4's score on every skill; its decode is at least `speedup` times the
teacher's (the paired `x base` of one `bench compare` run, teacher as baseline; else the ratio of the
probes' decode tok/s); its model memory (peak RSS minus the process before loading) is at most
`memory` of the teacher's. Pure functions over figures: a report is recomputable and testable.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Bar(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep: float = Field(0.92, gt=0.0, le=1.0)  # share of the teacher's score kept, every skill
    speedup: float = Field(2.0, gt=0.0)  # decode, student over teacher
    memory: float = Field(0.60, gt=0.0)  # model memory, student over teacher


class Figures(BaseModel):
    """One model's measured figures (teacher or student)."""

    name: str
    scores: dict[str, float]  # skill -> held-out score on the scored variant (int4)
    valid_json: float | None = None  # command answers that parse
    decode_tok_s: float | None = None
    speedup: float | None = None  # bench compare's paired `x base` (the teacher is 1.0)
    model_rss_mb: float | None = None
    params: int | None = None


class Verdict(BaseModel):
    student: str
    ship: bool
    kept: dict[str, float]  # skill -> student score / teacher score
    speedup: float | None
    memory_ratio: float | None
    checks: dict[str, bool]  # bar item -> met (a missing figure is not met)
    line: str


def judge(teacher: Figures, student: Figures, bar: Bar) -> Verdict:
    """The verdict for one student, in the method's words."""
    kept = {
        skill: (student.scores.get(skill, 0.0) / score if score > 0 else 0.0)
        for skill, score in teacher.scores.items()
    }
    speedup = student.speedup
    if speedup is None and student.decode_tok_s and teacher.decode_tok_s:
        speedup = student.decode_tok_s / teacher.decode_tok_s
    memory = (
        student.model_rss_mb / teacher.model_rss_mb
        if student.model_rss_mb is not None and teacher.model_rss_mb
        else None
    )
    checks = {f"keep {skill} >= {bar.keep:.0%}": k >= bar.keep for skill, k in kept.items()}
    checks[f"decode >= {bar.speedup:g}x"] = speedup is not None and speedup >= bar.speedup
    checks[f"memory <= {bar.memory:.0%}"] = memory is not None and memory <= bar.memory
    ship = bool(kept) and all(checks.values())
    least = min(kept.values()) if kept else 0.0
    time_change = f"{(1 / speedup - 1) * 100:+.0f}%" if speedup else "n/a"
    mem_change = f"{(memory - 1) * 100:+.0f}%" if memory is not None else "n/a"
    per_skill = ", ".join(f"{s} {k:.0%}" for s, k in kept.items())
    failed = [c for c, ok in checks.items() if not ok]
    line = (
        f"{'SHIP' if ship else 'NOT WORTH SHIPPING'}: {student.name}: inference time {time_change}, "
        f"memory {mem_change}, {least:.0%} of task accuracy kept ({per_skill})"
        + ("" if ship else f"; misses the bar on: {', '.join(failed)}")
    )
    return Verdict(
        student=student.name,
        ship=ship,
        kept=kept,
        speedup=speedup,
        memory_ratio=memory,
        checks=checks,
        line=line,
    )


def choose(teacher: Figures, students: list[Figures], bar: Bar) -> Verdict:
    """The student to ship: the one with the least model memory among those meeting the bar; when none
    does, the one that keeps the most of the teacher's score (its verdict then says why not)."""
    if not students:
        raise ValueError("no student to judge")
    verdicts = [(judge(teacher, s, bar), s) for s in students]
    passing = [(v, s) for v, s in verdicts if v.ship]
    if passing:
        return min(passing, key=lambda vs: vs[1].model_rss_mb or float("inf"))[0]
    return max(verdicts, key=lambda vs: (min(vs[0].kept.values(), default=0.0), vs[0].speedup or 0.0))[0]
