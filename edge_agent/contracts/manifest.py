"""The bundle manifest (`slmops.bundle/1`): one release of one model, every file pinned by hash."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
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

    def weights_digest(self) -> str:
        """The digest an adapter's `weights_sha256` must equal to apply to this variant."""
        return weights_digest(self.files, prefix=f"{self.id}/")


WEIGHT_SUFFIXES = (".onnx", ".onnx.data")


def weights_digest(files: Iterable[FileEntry], prefix: str = "") -> str:
    """The identity of a variant's base: sha256 over the (name, sha256) of its ONNX graph and weight
    files, by name; `prefix` (the variant's folder, e.g. `cpu-int4/`) is dropped from each path, so a
    bundle's manifest and a bare variant folder on disk give the same digest."""
    pairs = sorted((f.path.removeprefix(prefix), f.sha256) for f in files if f.path.endswith(WEIGHT_SUFFIXES))
    if not pairs:
        raise ValueError("no ONNX files to take the weights digest of")
    return hashlib.sha256("".join(f"{name}\0{sha}\n" for name, sha in pairs).encode()).hexdigest()


class AdapterPrompt(Contract):
    """How the adapter was trained to be asked; the agent applies it when a request names the adapter."""

    system: str | None = Field(
        None, description="system turn the adapter was trained with; used when a request brings none"
    )
    answer_format: Literal["text", "label", "json"] = Field(
        "text", description="label: one of `labels`; json: one JSON object; text: free text"
    )
    labels: list[str] = Field(default_factory=list, description="the answers a label adapter gives")
    probe: str | None = Field(
        None, description="a request of the adapter's task, asked once by the health gate at install"
    )


class AdapterGeneration(Contract):
    """Generation defaults of the adapter's task; a request's own values win, then these, then the
    bundle's `generation_defaults`."""

    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    repetition_penalty: float | None = Field(None, gt=0)


class AdapterScore(Contract):
    """A measured score of the adapter on one variant, on its validation split or a held-out set."""

    variant: Name
    split: Literal["validation", "heldout"]
    metric: str = Field(description="accuracy, exact_match, ...")
    value: float = Field(ge=0, le=1)
    examples: int = Field(ge=1)
    data: str = Field("", description="the data set's file name and sha256 prefix")


class AdapterBase(Contract):
    """One variant the adapter applies to: the base's weights it was exported against, and its file."""

    variant: Name
    weights_sha256: Sha256 = Field(description="weights_digest of the variant's ONNX files")
    file: RelPath = Field(description="the adapter's `.onnx_adapter` for this variant (one of `files`)")


class AdapterInfo(Contract):
    """What an adapter is for and how to ask it: written beside each exported `.onnx_adapter`
    (`<name>.adapter.json`, with `base_weights_sha256`) and carried into the bundle manifest."""

    name: Name
    trained_for: str = ""
    prompt: AdapterPrompt = Field(default_factory=AdapterPrompt)
    generation: AdapterGeneration = Field(default_factory=AdapterGeneration)
    scores: list[AdapterScore] = Field(default_factory=list)


class AdapterCard(AdapterInfo):
    """The sidecar of one exported adapter file: its info and the base it was exported against."""

    base_weights_sha256: Sha256


class Adapter(AdapterInfo):
    files: list[FileEntry] = Field(min_length=1)
    bases: list[AdapterBase] = Field(min_length=1, description="the variants it applies to")

    @model_validator(mode="after")
    def _consistent(self) -> Adapter:
        paths = {f.path for f in self.files}
        variants = [b.variant for b in self.bases]
        if len(set(variants)) != len(variants):
            raise ValueError(f"adapter {self.name!r} lists a variant twice: {variants}")
        for b in self.bases:
            if b.file not in paths:
                raise ValueError(f"adapter {self.name!r}: {b.file} (for {b.variant}) is not in its files")
        return self

    @property
    def variants(self) -> list[str]:
        return [b.variant for b in self.bases]

    def base_for(self, variant_id: str) -> AdapterBase | None:
        return next((b for b in self.bases if b.variant == variant_id), None)


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
        names = [a.name for a in self.adapters]
        if len(set(names)) != len(names):
            raise ValueError(f"adapter names must be unique, got {names}")
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

    def files_for(self, variant_id: str) -> list[FileEntry]:
        """What a device that runs this variant needs: its files and those of its adapters."""
        variant = self.variant(variant_id)
        wanted = {b.file for a in self.adapters for b in a.bases if b.variant == variant_id}
        extra = {f.path: f for a in self.adapters for f in a.files if f.path in wanted}
        return list(variant.files) + list(extra.values())


__all__ = [
    "BUNDLE_SCHEMA",
    "WEIGHT_SUFFIXES",
    "Adapter",
    "AdapterBase",
    "AdapterCard",
    "AdapterGeneration",
    "AdapterInfo",
    "AdapterPrompt",
    "AdapterScore",
    "BundleManifest",
    "GenerationDefaults",
    "Quantization",
    "Sha256",
    "SourceInfo",
    "Variant",
    "VariantEval",
    "weights_digest",
]
