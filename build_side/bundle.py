"""Assemble one release (name@version) from converted variants and adapter files, then sign it.

Layout (DESIGN.md section 3): `<out>/<name>/<version>/manifest.json` + `manifest.sig`, one folder per
variant (with a Foundry Local style `inference_model.json`), `adapters/<name>.onnx_adapter`. The bundle
is built in a temporary folder beside its final place and renamed into it, so a reader never sees half
of one; a previous local build of the same name@version is replaced (publishing is what is immutable).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from build_side.convert import ConvertedVariant, load_variants
from build_side.manifest_io import file_entries, write_signed_manifest
from edge_agent.contracts import (
    Adapter,
    AdapterBase,
    AdapterInfo,
    BundleManifest,
    GenerationDefaults,
    Variant,
)
from edge_agent.contracts.common import Name, SemVer
from edge_agent.errors import BuildError, ContractError
from edge_agent.hashing import sha256_file
from edge_agent.memory import estimate_model_mb
from edge_agent.signing import SigningKey

INFERENCE_MODEL = "inference_model.json"
CHAT_TEMPLATE = "chat_template.jinja"


class AdapterFile(BaseModel):
    """A ready LoRA adapter file (`.onnx_adapter`, its card `<name>.adapter.json` beside it) to ship
    with the variants it applies to. The same name may come several times, one file per base."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    path: Path
    variants: list[Name] | None = Field(
        None, description="default: every variant of the bundle whose weights the card names"
    )


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


def staging_dir(parent: Path, prefix: str) -> Path:
    """A hidden temporary folder that will be renamed into place, readable like any other folder
    (mkdtemp's 0700 would make a published bundle unreadable to the web server)."""
    work = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(work, 0o755)
    return work


def _chat_renderer(variant_dir: Path) -> Callable[[list[dict[str, str]], bool], str] | None:
    """Render the variant's chat template as transformers does (sandboxed jinja, trimmed blocks),
    without loading transformers: bundling stays fast."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    path = variant_dir / CHAT_TEMPLATE
    config_path = variant_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    text = path.read_text() if path.is_file() else config.get("chat_template")
    if not isinstance(text, str):
        return None

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.globals["raise_exception"] = raise_exception
    try:
        template = env.from_string(text)
    except jinja2.TemplateError as exc:
        raise BuildError(f"{path}: the chat template does not parse ({exc})") from exc
    tokens = {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)}

    def render(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        try:
            return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **tokens)
        except jinja2.TemplateError as exc:
            raise BuildError(f"{path}: the chat template failed on {messages} ({exc})") from exc

    return render


def prompt_template(variant_dir: Path) -> dict[str, str]:
    """Foundry Local's PromptTemplate ({Content} placeholders) derived from the chat template by
    rendering marker messages and keeping what each role adds."""
    render = _chat_renderer(variant_dir)
    if render is None:
        return {"prompt": "{Content}"}
    sys_msg = {"role": "system", "content": "S"}
    user = {"role": "user", "content": "{Content}"}
    asked = [sys_msg, {"role": "user", "content": "U"}]

    def added(before: list[dict[str, str]], after: list[dict[str, str]], gen: bool = False) -> str:
        head, full = render(before, False), render(after, gen)
        if not full.startswith(head):
            raise BuildError(
                f"{variant_dir}: the chat template is not incremental; write PromptTemplate by hand"
            )
        return full[len(head) :]

    return {
        "system": render([{"role": "system", "content": "{Content}"}], False),
        "user": added([sys_msg], [sys_msg, user]),
        "assistant": added(asked, [*asked, {"role": "assistant", "content": "{Content}"}]),
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
    """Weights + a full KV cache at `max_length` + one row of logits + runtime overhead, +10%: the
    agent's own rule (`edge_agent.memory`), which it also applies before loading a model."""
    return estimate_model_mb(variant_dir, record.device, max_length)


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


def _adapters(work: Path, files: list[AdapterFile], variants: list[Variant]) -> list[Adapter]:
    """Copy each adapter file into `work/adapters/` once (identical files shared between bases) and
    list it with the bases its card names: an adapter whose base is none of the bundle's variants,
    or not the variant it is asked for, is refused here, before anything is signed."""
    from build_side.finetune.export_adapters import read_card

    digests = {v.id: v.weights_digest() for v in variants}
    by_name: dict[str, list[AdapterFile]] = {}
    for a in files:
        by_name.setdefault(a.name, []).append(a)
    stored: dict[str, str] = {}  # sha256 of a file -> its path in the bundle
    out = []
    for name, entries in by_name.items():
        bases: list[AdapterBase] = []
        info: AdapterInfo | None = None
        scores = []
        for a in entries:
            if not a.path.is_file():
                raise BuildError(f"adapter {name!r}: {a.path} is not a file")
            card = read_card(a.path)
            info = info or AdapterInfo.model_validate(card.model_dump(include=set(AdapterInfo.model_fields)))
            scores += [s for s in card.scores if s not in scores]
            unknown = set(a.variants or []) - set(digests)
            if unknown:
                raise BuildError(f"adapter {name!r} names variants not in the bundle: {sorted(unknown)}")
            wanted = a.variants or [v for v, d in digests.items() if d == card.base_weights_sha256]
            if not wanted:
                raise BuildError(
                    f"adapter {name!r} ({a.path}) was exported for base weights "
                    f"{card.base_weights_sha256[:12]}; none of the bundle's variants "
                    f"({', '.join(digests)}) has them: export it against one of them"
                )
            for v in wanted:
                if digests[v] != card.base_weights_sha256:
                    raise BuildError(
                        f"adapter {name!r} ({a.path}) was exported for base weights "
                        f"{card.base_weights_sha256[:12]}, not {v}'s ({digests[v][:12]})"
                    )
            sha = sha256_file(a.path)
            if sha not in stored:
                taken = set(stored.values())
                rel = f"adapters/{name}.onnx_adapter"
                rel = rel if rel not in taken else f"adapters/{name}-{sha[:8]}.onnx_adapter"
                (work / "adapters").mkdir(exist_ok=True)
                shutil.copy2(a.path, work / rel)
                stored[sha] = rel
            bases += [AdapterBase(variant=v, weights_sha256=digests[v], file=stored[sha]) for v in wanted]
        assert info is not None
        used = {b.file for b in bases}
        entries_ = [f for f in file_entries(work, "adapters") if f.path in used]
        known = {v.id for v in variants}
        out.append(
            Adapter(
                **info.model_dump(exclude={"scores"}),
                scores=[s for s in scores if s.variant in known],
                files=entries_,
                bases=bases,
            )
        )
    return out


def assemble(
    convert_dir: Path,
    out_root: Path,
    settings: BundleSettings,
    key: SigningKey,
    recipe: tuple[str, str] | None = None,
) -> BundleResult:
    """Write `out_root/<name>/<version>/` from `convert_dir`'s variants and sign it. `recipe` is
    (path, sha256) of the pipeline recipe that made it, recorded in the manifest's source."""
    records = load_variants(Path(convert_dir), settings.variants)
    ids = [r.id for r in records]
    sources = {r.source.sha256 for r in records}
    if len(sources) > 1:
        raise BuildError(f"{convert_dir}: the variants were built from different weights; convert them again")
    source = records[0].source
    if recipe:
        source = source.model_copy(update={"recipe": recipe[0], "recipe_sha256": recipe[1]})
    final = Path(out_root) / settings.name / settings.version
    final.parent.mkdir(parents=True, exist_ok=True)
    work = staging_dir(final.parent, f".{settings.version}-")
    try:
        defaults = settings.generation_defaults
        for record in records:
            dest = work / record.id
            # copies, not links: editing a file of a bundle must never change the convert output
            shutil.copytree(Path(convert_dir) / record.id, dest)
            template = prompt_template(dest)
            (dest / INFERENCE_MODEL).write_text(
                json.dumps(inference_model(settings.name, record, template), indent=2) + "\n"
            )
        if defaults.chat_template_file is None and all((work / i / CHAT_TEMPLATE).is_file() for i in ids):
            defaults = defaults.model_copy(update={"chat_template_file": CHAT_TEMPLATE})
        variants = [
            _variant(work, r, estimate_memory_mb(work / r.id, r, defaults.max_length)) for r in records
        ]
        adapters = _adapters(work, settings.adapters, variants)
        try:
            manifest = BundleManifest(
                name=settings.name,
                version=settings.version,
                description=settings.description,
                task=settings.task,
                source=source,
                generation_defaults=defaults,
                variants=variants,
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
