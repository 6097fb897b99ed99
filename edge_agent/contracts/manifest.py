"""The bundle manifest (`slmops.bundle/1`): one release of one model, every file pinned by hash."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from edge_agent.contracts.common import Contract, FileEntry, Name, RelPath, SemVer, Sha256, utcnow

Precision = Literal["fp32", "fp16", "bf16", "int8", "int4"]
DeviceKind = Literal["cpu", "gpu", "npu"]

BUNDLE_SCHEMA = "slmops.bundle/1"


class Quantization(Contract):
    algorithm: str | None = Field(None, description="rtn, k_quant, gptq, gguf-carry, ...")
    block_size: int | None = None
    accuracy_level: int | None = None
    symmetric: bool | None = None
    lm_head_precision: Precision | None = None
    embedding_precision: Precision | None = None
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)


class VariantEval(Contract):
    """Quality and speed measured at build time against the full-precision reference."""

    reference: str = Field(description="what the figures compare against, e.g. 'cpu-fp32' or 'pytorch-fp32'")
    text: str = Field(description="name of the held-out text, with its sha256 prefix")
    tokens: int = Field(ge=0)
    perplexity: float
    reference_perplexity: float | None = None
    perplexity_ratio: float | None = None
    kl_divergence: float | None = None
    top1_agreement: float | None = Field(None, ge=0, le=1)
    size_bytes: int = Field(ge=0)
    decode_tok_s: float | None = None


class Variant(Contract):
    id: Name
    precision: Precision
    quantization: Quantization | None = None
    device: DeviceKind = "cpu"
    execution_providers: list[str] = Field(
        min_length=1, description="ONNX Runtime names, most preferred first"
    )
    min_memory_mb: int = Field(ge=0)
    files: list[FileEntry] = Field(min_length=1)
    eval: VariantEval | None = None


class Adapter(Contract):
    name: Name
    files: list[FileEntry] = Field(min_length=1)
    variants: list[Name] = Field(min_length=1, description="variant ids the adapter applies to")
    trained_for: str = ""


class SourceInfo(Contract):
    kind: Literal["named", "hf-folder", "hf-id", "gguf", "onnx"] = "hf-folder"
    ref: str = Field(description="model id, named source or path it came from")
    sha256: Sha256 | None = None
    recipe: str | None = None
    recipe_sha256: Sha256 | None = None
    tools: dict[str, str] = Field(default_factory=dict, description="versions of the tools that built it")


class GenerationDefaults(Contract):
    max_length: int = Field(2048, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    repetition_penalty: float = Field(1.0, gt=0)
    prompt_template: str | None = Field(
        None, description="'{prompt}' template when there is no chat template"
    )
    chat_template_file: RelPath | None = Field(
        None, description="jinja chat template inside each variant folder"
    )


class BundleManifest(Contract):
    schema_: Literal["slmops.bundle/1"] = Field(BUNDLE_SCHEMA, alias="schema")
    name: Name
    version: SemVer
    created: datetime = Field(default_factory=utcnow)
    description: str = ""
    task: Literal["chat", "completion"] = "chat"
    source: SourceInfo
    generation_defaults: GenerationDefaults = Field(default_factory=GenerationDefaults)
    variants: list[Variant] = Field(min_length=1)
    adapters: list[Adapter] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        ids = [v.id for v in self.variants]
        if len(set(ids)) != len(ids):
            raise ValueError(f"variant ids must be unique, got {ids}")
        for adapter in self.adapters:
            unknown = set(adapter.variants) - set(ids)
            if unknown:
                raise ValueError(f"adapter {adapter.name!r} lists unknown variants {sorted(unknown)}")
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def variant(self, variant_id: str) -> Variant:
        for v in self.variants:
            if v.id == variant_id:
                return v
        raise KeyError(f"{self.ref} has no variant {variant_id!r} (has {[v.id for v in self.variants]})")

    def all_files(self) -> list[FileEntry]:
        """Every file listed by the manifest, variants first, then adapters."""
        return [f for v in self.variants for f in v.files] + [f for a in self.adapters for f in a.files]


__all__ = [
    "BUNDLE_SCHEMA",
    "Adapter",
    "BundleManifest",
    "GenerationDefaults",
    "Quantization",
    "Sha256",
    "SourceInfo",
    "Variant",
    "VariantEval",
]
