"""Stage 1: the teacher answers the prompts, batch by batch, into an append-only JSONL file.

Prompts whose id is already in the output are skipped, so an interrupted run picks up where it
stopped and a finished one costs nothing. Every record carries the settings and the teacher's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from build_side.distill.config import GenerationSettings
from build_side.distill.progress import Advance
from build_side.distill.records import Prompt, RecordWriter, TeacherRecord, completed_ids
from build_side.distill.teachers import Teacher


@dataclass(frozen=True)
class GenerateResult:
    out: Path
    total: int  # prompts asked for
    skipped: int  # already in the output from an earlier run
    written: int  # new records this run
    failed: int = 0  # prompts the teacher gave no answer to after its tries (asked again next run)
    failures: dict[str, int] | None = None  # an endpoint teacher's failures by kind, every try counted


def generation_record(settings: GenerationSettings) -> dict:
    """The settings that shape an answer (not batch size or threads, which do not)."""
    return settings.model_dump(
        include={
            "max_new_tokens",
            "temperature",
            "top_p",
            "repetition_penalty",
            "seed",
            "chat",
            "system",
            "top_logprobs",
        }
    )


def generate_records(
    teacher: Teacher,
    prompts: list[Prompt],
    out: Path,
    settings: GenerationSettings,
    advance: Advance | None = None,
    max_batches: int | None = None,
) -> GenerateResult:
    """Answer every prompt not yet in `out`; `max_batches` stops early (a time slice, or a test's crash)."""
    done = completed_ids(out)
    todo = [p for p in prompts if p.id not in done]
    teacher_id = teacher.describe()
    gen = generation_record(settings)
    written = failed = 0
    with RecordWriter(out) as writer:
        for b, start in enumerate(range(0, len(todo), settings.batch_size)):
            if max_batches is not None and b >= max_batches:
                break
            batch = todo[start : start + settings.batch_size]
            answers = teacher.complete([p.prompt for p in batch], settings)
            writer.write(
                TeacherRecord(
                    id=p.id,
                    input=p.prompt,
                    teacher_output=a.text,
                    finish_reason=a.finish_reason,
                    output_tokens=a.output_tokens,
                    generation=gen,
                    teacher=teacher_id,
                    output_ids=a.token_ids,
                    topk_ids=a.topk_ids,
                    topk_logprobs=a.topk_logprobs,
                )
                for p, a in zip(batch, answers, strict=True)
                if a is not None
            )
            written += sum(a is not None for a in answers)
            failed += sum(a is None for a in answers)
            if advance:
                advance(len(batch))
    return GenerateResult(
        out=out,
        total=len(prompts),
        skipped=len(prompts) - len(todo),
        written=written,
        failed=failed,
        failures=getattr(teacher, "failures", None),
    )
