"""Assemble one release (name@version) from converted variants and adapter files, then sign it.

Layout (DESIGN.md section 3): `<out>/<name>/<version>/manifest.json` + `manifest.sig`, one folder per
variant (with a Foundry Local style `inference_model.json`), `adapters/<name>.onnx_adapter`. The bundle
is built in a temporary folder beside its final place and renamed into it, so a reader never sees half
of one; a previous local build of the same name@version is replaced (publishing is what is immutable).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from build_side.convert import ConvertedVariant, load_variants
from build_side.manifest_io import file_entries, write_signed_manifest
from edge_agent.contracts import Adapter, BundleManifest, GenerationDefaults, SourceInfo, Variant
from edge_agent.contracts.common import Name, SemVer
from edge_agent.errors import BuildError, ContractError
from edge_agent.signing import SigningKey

INFERENCE_MODEL = "inference_model.json"
CHAT_TEMPLATE = "chat_template.jinja"
RUNTIME_OVERHEAD_MB = 96  # onnxruntime + tokenizer + arena slack, measured loosely on CPU


class AdapterFile(BaseModel):
    """A ready LoRA adapter file (`.onnx_adapter`) to ship with the variants it applies to."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    path: Path
    variants: list[Name] | None = Field(None, description="default: every variant in the bundle")
    trained_for: str = ""


class BundleSettings(BaseModel):
    """What a release says about itself beyond its files."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    version: SemVer
    description: str = ""
    task: Literal["chat", "completion"] = "chat"
    variants: list[Name] | None = Field(None, description="variant ids to include (default: all converted)")
    generation_defaults: GenerationDefaults = Field(default_factory=GenerationDefaults)
    adapters: list[AdapterFile] = Field(default_factory=list)


@dataclass(frozen=True)
class BundleResult:
    path: Path
    manifest: BundleManifest
    manifest_sha256: str


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link when possible (same disk, instant, no extra space); the builder never edits a file
    in place, so a later convert replaces files instead of changing the bundle's."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def prompt_template(variant_dir: Path) -> dict[str, str]:
    """Foundry Local's PromptTemplate ({Content} placeholders) derived from the chat template by
    rendering marker messages and keeping what each role adds."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(variant_dir))
    except (OSError, ValueError) as exc:
        raise BuildError(f"{variant_dir}: cannot read the tokenizer ({exc})") from exc
    if not tok.chat_template:
        return {"prompt": "{Content}"}
    sys_msg = {"role": "system", "content": "S"}

    def render(messages: list[dict[str, str]], gen: bool = False) -> str:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    def added(before: list[dict[str, str]], after: list[dict[str, str]], gen: bool = False) -> str:
        head, full = render(before), render(after, gen)
        if not full.startswith(head):
            raise BuildError(
                f"{variant_dir}: the chat template is not incremental; write PromptTemplate by hand"
            )
        return full[len(head) :]

    user = {"role": "user", "content": "{Content}"}
    return {
        "system": render([{"role": "system", "content": "{Content}"}]),
        "user": added([sys_msg], [sys_msg, user]),
        "assistant": added(
            [sys_msg, {"role": "user", "content": "U"}],
            [sys_msg, {"role": "user", "content": "U"}, {"role": "assistant", "content": "{Content}"}],
        ),
        "prompt": added([sys_msg], [sys_msg, user], gen=True),
    }


def inference_model(name: str, record: ConvertedVariant, template: dict[str, str]) -> dict:
    """`inference_model.json` as Foundry Local reads it (Name, PromptTemplate) plus the runtime facts."""
    return {
        "Name": f"{name}-{record.id}",
        "PromptTemplate": template,
        "ModelConfig": {
            "DeviceType": record.device.upper(),
            "ExecutionProvider": record.execution_providers[0],
            "Precision": record.precision,
        },
    }


def estimate_memory_mb(variant_dir: Path, record: ConvertedVariant, max_length: int) -> int:
    """Weights + a full KV cache at `max_length` + one row of logits + runtime overhead, +10%."""
    config = json.loads((variant_dir / "genai_config.json").read_text())["model"]
    decoder = config["decoder"]
    weights = sum(f.stat().st_size for f in variant_dir.iterdir() if ".onnx" in f.name)
    length = min(max_length, int(config.get("context_length", max_length)))
    item = 2 if record.device != "cpu" else 4  # fp16 activations on GPUs, fp32 on CPU
    kv = (
        2
        * decoder["num_hidden_layers"]
        * decoder["num_key_value_heads"]
        * decoder["head_size"]
        * length
        * item
    )
    logits = int(config.get("vocab_size", 0)) * 4
    return math.ceil((weights + kv + logits) * 1.1 / 2**20) + RUNTIME_OVERHEAD_MB


def _variant(bundle: Path, record: ConvertedVariant, min_memory_mb: int) -> Variant:
    return Variant(
        id=record.id,
        precision=record.precision,
        quantization=record.quantization,
        device=record.device,
        execution_providers=record.execution_providers,
        min_memory_mb=min_memory_mb,
        files=file_entries(bundle, record.id),
        eval=record.eval,
    )


def assemble(
    convert_dir: Path, out_root: Path, settings: BundleSettings, source: SourceInfo, key: SigningKey
) -> BundleResult:
    """Write `out_root/<name>/<version>/` from `convert_dir`'s variants and sign it."""
    records = load_variants(Path(convert_dir), settings.variants)
    ids = [r.id for r in records]
    final = Path(out_root) / settings.name / settings.version
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{settings.version}-"))
    try:
        defaults = settings.generation_defaults
        for record in records:
            dest = work / record.id
            shutil.copytree(Path(convert_dir) / record.id, dest, copy_function=_link_or_copy)
            template = prompt_template(dest)
            (dest / INFERENCE_MODEL).write_text(
                json.dumps(inference_model(settings.name, record, template), indent=2) + "\n"
            )
        if defaults.chat_template_file is None and all((work / i / CHAT_TEMPLATE).is_file() for i in ids):
            defaults = defaults.model_copy(update={"chat_template_file": CHAT_TEMPLATE})
        adapters = []
        for a in settings.adapters:
            if not a.path.is_file():
                raise BuildError(f"adapter {a.name!r}: {a.path} is not a file")
            unknown = set(a.variants or []) - set(ids)
            if unknown:
                raise BuildError(f"adapter {a.name!r} names variants not in the bundle: {sorted(unknown)}")
            (work / "adapters").mkdir(exist_ok=True)
            shutil.copy2(a.path, work / "adapters" / f"{a.name}.onnx_adapter")
            files = [f for f in file_entries(work, "adapters") if f.path == f"adapters/{a.name}.onnx_adapter"]
            adapters.append(
                Adapter(name=a.name, files=files, variants=a.variants or ids, trained_for=a.trained_for)
            )
        try:
            manifest = BundleManifest(
                name=settings.name,
                version=settings.version,
                description=settings.description,
                task=settings.task,
                source=source,
                generation_defaults=defaults,
                variants=[
                    _variant(work, r, estimate_memory_mb(work / r.id, r, defaults.max_length))
                    for r in records
                ],
                adapters=adapters,
            )
        except ValueError as exc:
            raise ContractError("manifest.json", str(exc)) from exc
        data = write_signed_manifest(work, manifest, key)
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{settings.version}-old-"))
            os.replace(final, old / "b")
            os.replace(work, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BundleResult(final, manifest, hashlib.sha256(data).hexdigest())


__all__ = [
    "AdapterFile",
    "BundleResult",
    "BundleSettings",
    "assemble",
    "estimate_memory_mb",
    "inference_model",
    "prompt_template",
]
