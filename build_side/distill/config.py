"""The distillation recipe as typed settings: one model per stage, validated once, saved with the output.

A recipe's `distill:` section is a `DistillRecipe`; each stage also runs alone from the CLI with the
same settings. Relative paths are resolved by `resolve_path` against the recipe's folder, the working
directory, then the repository root, so a recipe works from wherever it is run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

REPO_ROOT = Path(__file__).resolve().parents[2]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerationSettings(_Settings):
    """How the teacher writes its answers (stage 1)."""

    max_new_tokens: int = Field(128, ge=1)  # an answer that reaches this without EOS counts as truncated
    temperature: float = Field(0.0, ge=0.0)  # 0 = greedy, reproducible
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    seed: int = 0
    batch_size: int = Field(
        8, ge=1
    )  # prompts per teacher call (a batch for transformers, concurrency for HTTP)
    chat: bool = True  # wrap each prompt in the teacher's chat template
    system: str | None = None  # a system message; None keeps the template's default
    limit: int | None = Field(None, ge=1)  # use only the first N prompts (sizing a run)
    threads: int | None = Field(None, ge=1)  # torch threads; 1 is faster than 2 on a busy machine
    # store the teacher's k most likely next tokens (log-probs) at every answer position, so training
    # needs no second pass of the teacher (0 = answers only; training then runs the teacher again)
    top_logprobs: int = Field(0, ge=0, le=64)


class ValidationSettings(_Settings):
    """Which teacher outputs are fit to learn from."""

    min_chars: int = Field(1, ge=1)  # shorter (after stripping) = empty
    max_chars: int = Field(2000, ge=1)  # longer = too long
    ngram: int = Field(4, ge=1)  # word n-gram size for the loop detector
    max_repeated_ngram_fraction: float = Field(0.3, ge=0.0, le=1.0)  # above = repetitive
    drop_truncated: bool = True  # hit max tokens without EOS
    drop_duplicates: bool = True  # same normalised output as an earlier record


class StudentSpec(_Settings):
    """Either a given smaller model (`source`) or the teacher with only some of its layers (depth),
    only some of its MLP channels (width), or both."""

    name: str | None = None  # how the report and the output folders call it (several students)
    source: str | None = None  # a model source with the teacher's tokenizer
    keep_layers: int | None = Field(None, ge=1)  # how many teacher layers the student keeps
    # even: evenly spaced, first and last included. block: keep the first and last layers and drop the
    # one contiguous block whose removal moves the outputs least (KL) on the teacher's answers (the deeper
    # middle layers are usually the most redundant); far better starting weights when half go.
    select: Literal["even", "block"] = "even"
    layers: list[int] | None = None  # exact teacher layer indices, overrides keep_layers
    # width: MLP intermediate channels kept per layer, the most active on the task data (Minitron)
    mlp_channels: int | None = Field(None, ge=1)
    # task: keep only the tokens of the training sequences (+ byte symbols, + the first
    # vocab_base_merges BPE merges): embedding and LM head rows, tokenizer renumbered (needs stored top-k)
    vocab: Literal["full", "task"] = "full"
    vocab_base_merges: int = Field(2000, ge=0)

    @model_validator(mode="after")
    def _one_way(self) -> StudentSpec:
        derived = self.keep_layers is not None or self.layers is not None or self.mlp_channels is not None
        if (self.source is not None) != derived:
            return self
        raise ValueError(
            "give either student.source or student.keep_layers/layers/mlp_channels, not both or neither"
        )

    def label(self) -> str:
        """The given name, else one made of the sizes: `l12`, `w768`, `l12-w768`."""
        if self.name:
            return self.name
        if self.source:
            return self.source.rstrip("/").rsplit("/", 1)[-1]
        parts = []
        if self.layers is not None or self.keep_layers is not None:
            parts.append(f"l{len(self.layers) if self.layers is not None else self.keep_layers}")
        if self.mlp_channels is not None:
            parts.append(f"w{self.mlp_channels}")
        if self.vocab == "task":
            parts.append("v")
        return "-".join(parts) or "full"


class TrainSettings(_Settings):
    """Stage 2: the student learns the teacher's distributions and answers."""

    temperature: float = Field(2.0, gt=0.0)  # softens both distributions; the KL term is scaled by T^2
    alpha: float = Field(0.5, ge=0.0, le=1.0)  # loss = alpha * KL + (1 - alpha) * CE
    max_steps: int = Field(100, ge=1)  # optimizer steps
    batch_size: int = Field(8, ge=1)  # sequences per micro-batch per process
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimizer step
    max_seq_len: int = Field(256, ge=8)  # prompt + answer tokens, longer ones are cut
    learning_rate: float = Field(3e-4, gt=0.0)
    min_lr: float = Field(3e-5, ge=0.0)  # end of the cosine
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(1.0, ge=0.0)  # 0 = off
    freeze_embeddings: bool = False  # keep the (tied) embeddings as the teacher's
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # records held out (prompts never trained on)
    eval_interval: int = Field(20, ge=1)  # steps between validation losses
    eval_batches: int = Field(4, ge=1)
    checkpoint_interval: int = Field(20, ge=1)
    seed: int = 1337
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    cpu: bool = False  # force CPU even where a GPU is present
    threads: int | None = Field(None, ge=1)


class ReportSettings(_Settings):
    """Stage 3: teacher against student."""

    heldout_text: str | None = None  # plain text for perplexity
    task: str | None = None  # JSONL {"question", "answers": [...]}: score = share answered right
    task_max_new_tokens: int = Field(32, ge=1)
    max_heldout_records: int = Field(32, ge=1)  # held-out prompts used for agreement/KL
    speed_prompts: int = Field(3, ge=1)
    speed_new_tokens: int = Field(32, ge=2)  # fixed output length for decode timing
    speed_repeats: int = Field(2, ge=1)
    threads: int | None = Field(None, ge=1)
    onnx_variant: str | None = (
        "cpu-int4"  # also convert both and measure them in onnxruntime-genai; None = skip
    )


class SkillSettings(_Settings):
    """One skill of a task: how its teacher is asked, and how the student learns and is asked."""

    name: Literal["intent", "command"]  # the skill the held-out set scores (build_side.tasks.ops)
    adapter: str | None = None  # the teacher's adapter for this skill (from task.teacher_finetune)
    system: str | None = None  # the teacher's system prompt; None = the adapter's training template's
    # the prompt the student learns under and is asked with on the device; short = fewer tokens per
    # request (a student is a new model, it need not keep the teacher's long instruction). None = system
    student_system: str | None = None
    max_new_tokens: int = Field(48, ge=1)


class TaskBar(_Settings):
    """The bar a student must meet to ship (see build_side.distill.verdict.Bar)."""

    keep: float = Field(0.92, gt=0.0, le=1.0)
    speedup: float = Field(2.0, gt=0.0)
    memory: float = Field(0.60, gt=0.0)


class TaskSettings(_Settings):
    """A task student: a task teacher (base + one adapter per skill) labels task requests; several
    students are trained; each is scored on a held-out set on the variant devices run."""

    kind: Literal["ops"] = "ops"
    teacher_finetune: str | None = None  # a recipe whose finetune: section trains the teacher's adapters
    heldout: str  # the evaluation set (build_side.tasks.ops request lines)
    skills: list[SkillSettings] = Field(min_length=1)
    variant: str = "cpu-int4"  # what the held-out set is scored on, for teacher and students
    bar: TaskBar = TaskBar()
    heldout_limit: int | None = Field(None, ge=1)  # score only the first N (sizing a run)
    speed_scenario: str = "pp64-tg32"  # bench compare scenario (prefill, generated tokens)
    speed_reps: int = Field(3, ge=1)
    threads: int | None = Field(None, ge=1)  # onnxruntime threads for scoring and speed


class DistillRecipe(_Settings):
    """The `distill:` section of a recipe."""

    teacher: str | None = None  # a model source; None = the recipe's base model
    prompts: str  # JSONL of {"id", "prompt"}
    generate: GenerationSettings = GenerationSettings()
    validate_outputs: ValidationSettings = Field(default_factory=ValidationSettings, alias="validate")
    student: StudentSpec | None = None
    students: list[StudentSpec] | None = None  # several, compared in the report (task recipes)
    task: TaskSettings | None = None
    train: TrainSettings = TrainSettings()
    report: ReportSettings | None = ReportSettings()
    base_dir: str | None = None  # where relative paths start (the recipe's folder)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _students(self) -> DistillRecipe:
        if (self.student is None) == (self.students is None):
            raise ValueError("give either student (one) or students (a list), not both or neither")
        if self.students is not None:
            if not self.students:
                raise ValueError("students: give at least one")
            labels = [s.label() for s in self.students]
            if len(set(labels)) != len(labels):
                raise ValueError(f"students need distinct names, got {labels}")
        if self.students is not None and self.task is None:
            raise ValueError("several students are compared on a task: add a task section")
        return self

    def student_specs(self) -> list[StudentSpec]:
        return self.students if self.students is not None else [self.student]  # type: ignore[list-item]

    def path(self, value: str) -> Path:
        return resolve_path(value, Path(self.base_dir) if self.base_dir else None)


def resolve_path(value: str | Path, base: Path | None = None) -> Path:
    """An absolute path as is; a relative one against base, the working directory, then the repo root."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    for root in (base, Path.cwd(), REPO_ROOT):
        if root is not None and (root / p).exists():
            return root / p
    return (base or Path.cwd()) / p
