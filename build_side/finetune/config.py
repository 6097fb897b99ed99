"""The typed settings of one fine-tuning run, with the defaults commented where they are set.

One `FinetuneConfig` describes one run (one adapter or one full model). A recipe's `finetune`
section holds shared defaults and, optionally, `adapters: {name: overrides}` for several adapters
on one base (see `recipe.py`). The resolved config is written beside what the run produced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Method = Literal["lora", "qlora", "full"]
Metric = Literal["auto", "accuracy", "exact_match", "perplexity"]

# Every linear layer of a llama-family block: LoRA on all of them trains best for its size.
LLAMA_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Settings(BaseModel):
    """Unknown keys are errors, so a typo in a recipe never passes silently."""

    model_config = ConfigDict(extra="forbid")


class LoraSettings(Settings):
    r: int = Field(8, ge=1, le=512, description="rank of the low-rank update")
    alpha: float = Field(16, gt=0, description="the update is scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(LLAMA_LINEARS), min_length=1)
    layers: list[int] | None = Field(
        None,
        description="only these decoder layers get LoRA (None: all; '15-29' is a range). The top "
        "layers alone train about twice as fast: the backward pass stops below the lowest one.",
    )

    @field_validator("layers", mode="before")
    @classmethod
    def _range(cls, value: object) -> object:
        if isinstance(value, str):
            first, _, last = value.partition("-")
            if not (first.strip().isdigit() and last.strip().isdigit()):
                raise ValueError(f"expected a list of layer numbers or a range like '15-29', got {value!r}")
            return list(range(int(first), int(last) + 1))
        return value


class PromptTemplate(Settings):
    """How a record becomes a prompt and a response. `{field}` names a field of the record."""

    prompt: str = Field("{input}", description="the user turn (or the whole prompt without chat)")
    response: str = Field("{output}", description="what the model learns to answer")
    system: str | None = Field(None, description="a system turn; None keeps the model's default")
    chat: bool = Field(True, description="wrap in the model's chat template (when it has one)")


class DataSettings(Settings):
    train: Path = Field(description="JSON or JSONL: {input, output} pairs, any fields, or {messages}")
    validation: Path | None = Field(None, description="a separate validation file; else a split")
    val_fraction: float = Field(0.15, ge=0.05, le=0.5, description="share held out for validation")
    label_field: str | None = Field(
        "label", description="records carrying it are split stratified and scored by accuracy"
    )
    template: PromptTemplate = Field(default_factory=PromptTemplate)
    max_length: int = Field(256, ge=8, description="tokens per example; longer prompts lose their start")


class TrainSettings(Settings):
    epochs: float = Field(3, gt=0)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    batch_size: int = Field(8, ge=1, description="examples per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(2e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the cosine decays to lr * this")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="share of steps with a linear warm-up")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = False
    eval_every: int | None = Field(None, ge=1, description="steps between validations (None: per epoch)")
    patience: int = Field(3, ge=1, description="validations without improvement before stopping early")
    min_delta: float = Field(0.0, ge=0, description="how much lower a validation loss must be to count")
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = 0
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")


class EvalSettings(Settings):
    metric: Metric = Field(
        "auto", description="auto: accuracy on labelled records, exact match, else perplexity"
    )
    max_new_tokens: int = Field(16, ge=1)
    max_examples: int | None = Field(None, ge=1, description="score at most this many (None: all)")
    batch_size: int = Field(16, ge=1)
    before: bool = Field(True, description="also score the base model before training")


class HeldoutSettings(Settings):
    """A request set written apart from the training data, scored after export (ops task format:
    `build_side.tasks.ops`); the score goes into the manifest beside the validation score."""

    path: Path = Field(description="JSONL of {input, intent, command}")
    skill: Literal["intent", "command"] = Field(description="which answer this adapter gives")


class ReleaseSettings(Settings):
    """How the adapter is asked once it ships: its card in the bundle manifest."""

    answer_format: Literal["text", "label", "json"] = Field(
        "text", description="label: one of the training labels; json: one JSON object"
    )
    max_tokens: int | None = Field(
        None, ge=1, description="default answer budget (None: eval.max_new_tokens)"
    )
    temperature: float | None = Field(None, ge=0, description="None: the bundle's default")
    heldout: HeldoutSettings | None = None


class FinetuneConfig(Settings):
    name: str = Field("adapter", pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", description="adapter name")
    trained_for: str = Field("", description="one line for the bundle manifest")
    method: Method = "lora"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    data: DataSettings
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    merge: bool = Field(False, description="lora/qlora: also write the merged full model")
    quantize_base: Literal["none", "int4"] = Field(
        "none",
        description="lora: train against the base's int4 weights as the cpu-int4 variant stores them "
        "(onnxruntime's RTN, symmetric), so the adapter learns around the quantization error",
    )
    quantize_block_size: Literal[16, 32, 64, 128, 256] = Field(32, description="as the variant's block_size")
    release: ReleaseSettings = Field(default_factory=ReleaseSettings)

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneConfig:
        if self.method == "full" and self.merge:
            raise ValueError("merge applies to lora and qlora; a full fine-tune already is a full model")
        if self.quantize_base != "none" and self.method != "lora":
            raise ValueError("quantize_base applies to lora (qlora quantizes its base its own way)")
        return self
