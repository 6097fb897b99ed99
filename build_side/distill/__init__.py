"""Knowledge distillation, teacher to student: the public face of the stage.

Stage 1 (`generate_records`, `validate`): the teacher answers prompts; unfit answers are filtered.
Stage 2 (`train_student`): a student (`derive_student` from the teacher's layers, or a given model) learns
from the teacher's distributions (`distill_loss`) and answers.
Stage 3 (`build_report`): teacher against student, quality, speed, memory, retention.
`run_from_recipe` runs all three from a recipe's `distill:` section (the build pipeline's hook).
"""

from __future__ import annotations

from build_side.distill.config import (
    DistillRecipe,
    GenerationSettings,
    ReportSettings,
    StudentSpec,
    TrainSettings,
    ValidationSettings,
)
from build_side.distill.generate import GenerateResult, generate_records
from build_side.distill.records import Prompt, TeacherRecord, read_prompts, read_records
from build_side.distill.teachers import Completion, OpenAITeacher, Teacher, TransformersTeacher, open_teacher
from build_side.distill.validate import ValidationResult, validate


def __getattr__(name: str):
    """The torch-heavy parts load on first use, so `import build_side.distill` stays light."""
    lazy = {  # name -> (module, attribute); `train` is also the module's name, hence train_student
        "train_student": ("build_side.distill.train", "train"),
        "TrainResult": ("build_side.distill.train", "TrainResult"),
        "distill_loss": ("build_side.distill.loss", "distill_loss"),
        "derive_student": ("build_side.distill.student", "derive_student"),
        "even_layers": ("build_side.distill.student", "even_layers"),
        "build_report": ("build_side.distill.report", "build_report"),
        "run_from_recipe": ("build_side.distill.recipe", "run_from_recipe"),
        "load_recipe": ("build_side.distill.recipe", "load_recipe"),
    }
    if name in lazy:
        import importlib

        module, attr = lazy[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(name)


__all__ = [
    "Completion",
    "DistillRecipe",
    "GenerateResult",
    "GenerationSettings",
    "OpenAITeacher",
    "Prompt",
    "ReportSettings",
    "StudentSpec",
    "Teacher",
    "TeacherRecord",
    "TrainResult",
    "TrainSettings",
    "TransformersTeacher",
    "ValidationResult",
    "ValidationSettings",
    "build_report",
    "derive_student",
    "distill_loss",
    "even_layers",
    "generate_records",
    "load_recipe",
    "open_teacher",
    "read_prompts",
    "read_records",
    "run_from_recipe",
    "train_student",
    "validate",
]
