"""A whole distillation from a recipe: generate, validate, train, report, into one output folder.

    OUT/data/teacher.jsonl      stage 1, append-only (a rerun skips what is there)
    OUT/data/validation.json    what the filters kept and dropped, by reason
    OUT/train/...               stage 2 (checkpoint, metrics, distill_config.json)
    OUT/student/                the student, a Hugging Face folder: what convert takes next
    OUT/report/                 report.md, report.json, report.png

Every stage resumes: run the same recipe again after an interruption.
`run_from_recipe(section, base_model_dir, out_dir)` is what the build pipeline calls.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from build_side.distill.config import DistillRecipe
from build_side.distill.records import read_prompts, read_records
from build_side.distill.validate import ValidationResult, validate
from edge_agent.errors import DistillError

Say = Callable[[str], None]


def load_recipe(path: Path) -> tuple[dict[str, Any], DistillRecipe]:
    """(the whole recipe, its `distill:` section typed, with paths relative to the recipe's folder)."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DistillError(f"{path}: cannot read the recipe ({exc})") from exc
    if "distill" not in doc:
        raise DistillError(f"{path}: no `distill:` section")
    return doc, parse_section(doc["distill"], base_dir=path.parent)


def parse_section(section: dict[str, Any] | DistillRecipe, base_dir: Path | None = None) -> DistillRecipe:
    from pydantic import ValidationError

    if isinstance(section, DistillRecipe):
        return section
    data = dict(section)
    if base_dir is not None and not data.get("base_dir"):
        data["base_dir"] = str(base_dir.resolve())
    try:
        return DistillRecipe.model_validate(data)
    except ValidationError as exc:
        raise DistillError(f"distill recipe: {exc}") from exc


def usable_records(recipe: DistillRecipe, data_file: Path) -> tuple[ValidationResult, list[str]]:
    """The teacher records for this recipe's prompts, filtered; also the prompt ids still missing."""
    prompts = read_prompts(recipe.path(recipe.prompts), recipe.generate.limit)
    wanted = {p.id for p in prompts}
    records = [r for r in read_records(data_file) if r.id in wanted]
    missing = sorted(wanted - {r.id for r in records})
    return validate(records, recipe.validate_outputs), missing


def run_from_recipe(
    section: dict[str, Any] | DistillRecipe,
    base_model_dir: Path,
    out_dir: Path,
    recipe_dir: Path | None = None,
    say: Say = print,
    progress: bool = True,
) -> Path:
    """Distil the recipe's teacher (default: `base_model_dir`) into a student; returns its HF folder.
    Relative paths in the section start at `recipe_dir` (the recipe file's folder)."""
    from build_side.distill.generate import generate_records
    from build_side.distill.progress import bar
    from build_side.distill.teachers import TransformersTeacher
    from build_side.distill.train import train

    recipe = parse_section(section, base_dir=recipe_dir)
    out_dir = Path(out_dir)
    if recipe.task is not None:  # a task student: teacher adapters, stage 1 per skill, several students
        from build_side.distill.task import run_task

        return run_task(recipe, Path(base_model_dir), out_dir, say=say, progress=progress)
    assert recipe.student is not None
    data_file = out_dir / "data" / "teacher.jsonl"

    # ---- stage 1: the teacher answers (only the prompts not answered yet)
    if recipe.teacher:
        from build_side.sources import prepare

        prepared = prepare(recipe.teacher)
        teacher_dir, info = prepared.path, {"source": recipe.teacher, "sha256": prepared.sha256}
    else:
        teacher_dir, info = Path(base_model_dir), {"source": str(base_model_dir)}
    prompts = read_prompts(recipe.path(recipe.prompts), recipe.generate.limit)
    result, missing = usable_records(recipe, data_file)
    if missing:
        teacher = TransformersTeacher(teacher_dir, info=info, threads=recipe.generate.threads)
        say(f"stage 1: the teacher answers {len(missing)} of {len(prompts)} prompts -> {data_file}")
        with bar("teacher answering", len(prompts), len(prompts) - len(missing), progress) as advance:
            generate_records(teacher, prompts, data_file, recipe.generate, advance)
        del teacher  # free its memory before training loads its own copy
        result, missing = usable_records(recipe, data_file)
    counts = result.counts()
    (out_dir / "data" / "validation.json").write_text(
        json.dumps({"counts": counts, "rejected": result.rejected}, indent=2)
    )
    say("stage 1 validation: " + ", ".join(f"{k} {v}" for k, v in counts.items()))

    # ---- stage 2: the student learns
    teacher_id = result.kept[0].teacher if result.kept else {}
    context = {
        "teacher": teacher_id,
        "generation": recipe.generate.model_dump(),
        "validation": counts,
        "recipe": recipe.model_dump(by_alias=True),
    }
    cfg = recipe.train
    say(f"stage 2: training the student for {cfg.max_steps} steps on {counts['kept']} records")
    with bar("student learning", cfg.max_steps, enabled=progress) as advance:
        trained = train(result.kept, teacher_dir, recipe.student, cfg, out_dir / "train", context, advance)
    student_dir = out_dir / "student"
    stamp = "distill_config.json"
    if (
        not (student_dir / stamp).is_file()
        or (student_dir / stamp).read_text() != (trained.student_dir / stamp).read_text()
    ):
        if student_dir.exists():
            shutil.rmtree(student_dir)
        shutil.copytree(trained.student_dir, student_dir)
    say(f"stage 2 done: val loss {trained.val_loss:.4f} -> {student_dir}")

    # ---- stage 3: teacher against student
    if recipe.report is not None:
        from build_side.distill.report import build_report

        report = build_report(
            teacher_dir,
            student_dir,
            out_dir / "report",
            recipe.report,
            heldout_records=[r for r in result.kept if r.id in set(_val_ids(out_dir / "train"))],
            train_dir=out_dir / "train",
            base_dir=Path(recipe.base_dir) if recipe.base_dir else None,
            say=say,
        )
        say(f"stage 3: {report['headline']} -> {out_dir / 'report'}")
    return student_dir


def _val_ids(train_dir: Path) -> list[str]:
    cfg = json.loads((train_dir / "distill_config.json").read_text())
    return list(cfg.get("val_ids", []))
