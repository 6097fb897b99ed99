"""Knowledge distillation, teacher to student: the public face of the stage.

Stage 1 (`generate_records`, `validate`): the teacher answers prompts; unfit answers are filtered.
"""

from __future__ import annotations

from build_side.distill.config import DistillRecipe, GenerationSettings, ValidationSettings
from build_side.distill.generate import GenerateResult, generate_records
from build_side.distill.records import Prompt, TeacherRecord, read_prompts, read_records
from build_side.distill.teachers import Completion, OpenAITeacher, Teacher, TransformersTeacher, open_teacher
from build_side.distill.validate import ValidationResult, validate

__all__ = [
    "Completion",
    "DistillRecipe",
    "GenerateResult",
    "GenerationSettings",
    "OpenAITeacher",
    "Prompt",
    "Teacher",
    "TeacherRecord",
    "TransformersTeacher",
    "ValidationResult",
    "ValidationSettings",
    "generate_records",
    "open_teacher",
    "read_prompts",
    "read_records",
    "validate",
]
