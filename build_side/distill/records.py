"""The stage-1 files: prompts in, teacher records out (JSON Lines, append-only so a run can resume).

A record is written as soon as its batch is done. After an interruption the last line may be cut
short; `completed_ids` ignores it and `open_for_append` trims it, so the next run appends cleanly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from edge_agent.errors import DistillError


class Prompt(BaseModel):
    id: str
    prompt: str


class TeacherRecord(BaseModel):
    """One teacher answer with everything needed to trust and reproduce it."""

    id: str
    input: str
    teacher_output: str
    finish_reason: Literal["stop", "length"]  # length = hit max_new_tokens without EOS
    output_tokens: int | None = None
    generation: dict[str, Any]  # the settings that produced it
    teacher: dict[str, Any]  # which teacher: kind, source or url/model, sha256 where known
    # the answer's token ids as generated (EOS last when it stopped), and per position the teacher's
    # top-k next tokens: [[id, ...], ...] and their log-probs [[lp, ...], ...] (stored by stage 1)
    output_ids: list[int] | None = None
    topk_ids: list[list[int]] | None = None
    topk_logprobs: list[list[float]] | None = None


def read_prompts(path: Path, limit: int | None = None) -> list[Prompt]:
    """Read {"id", "prompt"} lines ("input" or "instruction" are accepted for "prompt")."""
    prompts: list[Prompt] = []
    seen: set[str] = set()
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DistillError(f"{path}: cannot read prompts ({exc})") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            text = raw.get("prompt") or raw.get("input") or raw.get("instruction")
            prompt = Prompt(id=str(raw.get("id", f"line-{n}")), prompt=text)
        except (ValueError, AttributeError, ValidationError) as exc:
            raise DistillError(f"{path}:{n}: not a prompt line ({exc})") from exc
        if prompt.id in seen:
            raise DistillError(f"{path}:{n}: prompt id {prompt.id!r} appears twice")
        seen.add(prompt.id)
        prompts.append(prompt)
        if limit and len(prompts) >= limit:
            break
    return prompts


def read_records(path: Path) -> list[TeacherRecord]:
    """All complete records; a cut-off last line (an interrupted run) is skipped."""
    if not path.exists():
        return []
    records = []
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(TeacherRecord.model_validate_json(line))
        except ValidationError as exc:
            if n == len(lines):  # the line being written when the run stopped
                break
            raise DistillError(f"{path}:{n}: not a teacher record ({exc})") from exc
    return records


def completed_ids(path: Path) -> set[str]:
    return {r.id for r in read_records(path)}


def _trim_partial_line(path: Path) -> None:
    """Drop bytes after the last newline: what a killed writer left half-written."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


class RecordWriter:
    """Appends records and makes each batch durable before the next one starts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            _trim_partial_line(path)
        self._f = path.open("a", encoding="utf-8")

    def write(self, records: Iterable[TeacherRecord]) -> None:
        for r in records:
            self._f.write(r.model_dump_json() + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_records(path: Path, records: Iterable[TeacherRecord]) -> None:
    """Write a whole file at once (the filtered set), atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)
