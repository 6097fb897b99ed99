"""A task student from a task teacher: teacher adapters, stage 1 per skill, several students, report.

    OUT/teacher/<skill>/            the teacher for one skill: the base with its adapter merged (a link)
    OUT/data/teacher-<skill>.jsonl  stage 1 per skill, append-only with the teacher's top-k log-probs
    OUT/data/validation.json        what the filters kept and dropped, per skill and reason
    OUT/students/<name>/train/      stage 2 per student (checkpoint, metrics, distill_config.json)
    OUT/students/<name>/student/    each student, a Hugging Face folder
    OUT/student/                    the student the report chose to ship (what convert takes next)
    OUT/report/                     report.md, report.json, report.png with the verdict line

The teacher's adapters come from the recipe named by `task.teacher_finetune` through the fine-tune
stage's content-addressed cache: a release that trained them already (the same config and base) is
reused, not trained again. Every stage resumes or is skipped when its output is there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from build_side.distill.config import DistillRecipe, GenerationSettings, SkillSettings, TaskSettings
from build_side.distill.records import Prompt, TeacherRecord, read_prompts, read_records
from build_side.distill.validate import validate
from edge_agent.errors import DistillError


def teacher_adapters(
    task: TaskSettings, recipe: DistillRecipe, base_dir: Path, out_dir: Path
) -> dict[str, tuple[Path, str | None]]:
    """{adapter name: (PEFT folder, the system prompt it was trained with)} from the fine-tune cache."""
    if task.teacher_finetune is None:
        return {}
    path = recipe.path(task.teacher_finetune)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DistillError(f"{path}: cannot read the teacher's fine-tune recipe ({exc})") from exc
    section = doc.get("finetune")
    if not isinstance(section, dict):
        raise DistillError(f"{path}: no finetune: section to train the teacher's adapters with")
    from build_side.finetune import run_from_recipe as finetune

    trained = finetune(
        section, base_dir, out_dir / "teacher" / "finetune", recipe_dir=path.parent, cache=True
    )
    systems = {
        name: ((spec.get("data") or {}).get("template") or {}).get("system")
        for name, spec in (section.get("adapters") or {}).items()
    }
    return {name: (Path(p), systems.get(name)) for name, p in trained.items()}


def skill_teacher(
    skill: SkillSettings, adapters: dict[str, tuple[Path, str | None]], base_dir: Path
) -> tuple[Path, str | None]:
    """(the teacher's HF folder for this skill, its system prompt): the base with the skill's adapter merged."""
    if skill.adapter is None:
        return base_dir, skill.system
    if skill.adapter not in adapters:
        raise DistillError(
            f"skill {skill.name}: the teacher has no adapter {skill.adapter!r} (have {sorted(adapters)})"
        )
    from build_side.adapters import merge_adapters
    from build_side.fingerprint import dir_digest

    peft, system = adapters[skill.adapter]
    merged, _ = merge_adapters(base_dir, dir_digest(base_dir), {skill.adapter: peft})
    return merged, skill.system if skill.system is not None else system


def stage1(
    recipe: DistillRecipe,
    teachers: dict[str, tuple[Path, str | None]],
    out_dir: Path,
    say: Any,
    progress: bool,
) -> dict[str, list[TeacherRecord]]:
    """Each skill's teacher answers every request not answered yet; returns the kept records per skill."""
    from build_side.distill.generate import generate_records
    from build_side.distill.progress import bar
    from build_side.distill.teachers import TransformersTeacher

    assert recipe.task is not None
    requests = read_prompts(recipe.path(recipe.prompts), recipe.generate.limit)
    kept: dict[str, list[TeacherRecord]] = {}
    counts: dict[str, Any] = {}
    for skill in recipe.task.skills:
        teacher_dir, system = teachers[skill.name]
        settings = recipe.generate.model_copy(
            update={"system": system, "max_new_tokens": skill.max_new_tokens}
        )
        prompts = [Prompt(id=f"{skill.name}:{p.id}", prompt=p.prompt) for p in requests]
        data = out_dir / "data" / f"teacher-{skill.name}.jsonl"
        done = {r.id for r in read_records(data)}
        todo = [p for p in prompts if p.id not in done]
        if todo:
            say(
                f"stage 1 ({skill.name}): the teacher answers {len(todo)} of {len(prompts)} requests -> {data}"
            )
            teacher = TransformersTeacher(
                teacher_dir, info={"source": str(teacher_dir), "skill": skill.name}, threads=settings.threads
            )
            with bar(f"teacher {skill.name}", len(prompts), len(prompts) - len(todo), progress) as advance:
                generate_records(teacher, prompts, data, settings, advance)
            del teacher
        wanted = {p.id for p in prompts}
        records = [r for r in read_records(data) if r.id in wanted]
        result = validate(records, recipe.validate_outputs)
        counts[skill.name] = {"counts": result.counts(), "rejected": result.rejected}
        kept[skill.name] = _as_student_prompt(result.kept, skill, system)
        say(
            f"stage 1 validation ({skill.name}): " + ", ".join(f"{k} {v}" for k, v in result.counts().items())
        )
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    (out_dir / "data" / "validation.json").write_text(json.dumps(counts, indent=2))
    return kept


def _as_student_prompt(
    records: list[TeacherRecord], skill: SkillSettings, system: str | None
) -> list[TeacherRecord]:
    """The records as the student learns them: under its own (shorter) system prompt when one is set."""
    student_system = skill.student_system if skill.student_system is not None else system
    if student_system == system:
        return records
    return [r.model_copy(update={"generation": {**r.generation, "system": student_system}}) for r in records]


def run_task(
    recipe: DistillRecipe, base_model_dir: Path, out_dir: Path, say: Any = print, progress: bool = True
) -> Path:
    """The whole task distillation; returns the chosen student's HF folder."""
    from transformers import AutoConfig

    from build_side.distill.student import check_spec
    from build_side.distill.train import train

    task = recipe.task
    assert task is not None
    out_dir = Path(out_dir)
    base_dir = Path(base_model_dir)
    if recipe.teacher:
        from build_side.sources import prepare

        base_dir = prepare(recipe.teacher).path
    config = AutoConfig.from_pretrained(base_dir)
    specs = recipe.student_specs()
    for spec in specs:  # a size the model cannot take fails here, before any teacher pass or training
        check_spec(spec, config)
    heldout = recipe.path(task.heldout)
    from build_side.tasks import ops

    ops.load_requests(heldout)  # a bad line: file, line and field, before any work

    # ---- the teacher: base + one adapter per skill (reused from the fine-tune cache)
    adapters = teacher_adapters(task, recipe, base_dir, out_dir)
    teachers = {s.name: skill_teacher(s, adapters, base_dir) for s in task.skills}
    for name, (path, _) in teachers.items():
        link = out_dir / "teacher" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path.resolve(), target_is_directory=True)

    # ---- stage 1, per skill; then every student learns both skills from the stored top-k
    kept = stage1(recipe, teachers, out_dir, say, progress)
    records = [r for skill in task.skills for r in kept[skill.name]]
    context = {
        "teacher": {n: str(p) for n, (p, _) in teachers.items()},
        "generation": recipe.generate.model_dump(),
    }
    students: dict[str, Path] = {}
    from build_side.distill.progress import bar

    for spec in specs:
        name = spec.label()
        cfg = recipe.train
        say(f"stage 2 ({name}): {cfg.max_steps} steps on {len(records)} records")
        with bar(f"student {name}", cfg.max_steps, enabled=progress) as advance:
            result = train(
                records, base_dir, spec, cfg, out_dir / "students" / name / "train", context, advance
            )
        target = out_dir / "students" / name / "student"
        _copy_if_changed(result.student_dir, target)
        students[name] = target
        say(f"stage 2 ({name}): val loss {result.val_loss:.4f} -> {target}")

    # ---- stage 3: every student against the teacher on the held-out set, and the verdict
    from build_side.distill.task_report import build_task_report

    report = build_task_report(recipe, teachers, students, out_dir / "report", say=say)
    chosen = students[report["verdict"]["student"]]
    _copy_if_changed(chosen, out_dir / "student")
    say(f"stage 3: {report['verdict']['line']} -> {out_dir / 'report'}")
    return out_dir / "student"


def _copy_if_changed(src: Path, dst: Path) -> None:
    stamp = "distill_config.json"
    if (
        (dst / stamp).is_file()
        and (src / stamp).is_file()
        and (dst / stamp).read_text() == (src / stamp).read_text()
    ):
        return
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def settings_for(skill: SkillSettings, base: GenerationSettings) -> GenerationSettings:
    return base.model_copy(update={"max_new_tokens": skill.max_new_tokens})
