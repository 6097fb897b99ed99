"""Run a recipe stage by stage, skipping every stage whose inputs have not changed since it last ran.

Each stage has an input fingerprint (content hashes of the model it starts from, of the data files
its settings name, and of the settings themselves) and an output fingerprint. Both are kept in
`<work_dir>/pipeline-state.json`; a stage is skipped when its input fingerprint matches the last
run's and its output is still there, unchanged. The source stage is content-cached by
`build_side.sources`; publish is skipped when the registry already holds the same manifest bytes.

Distill and fine-tune are hooks other modules provide: `build_side.distill.run_from_recipe` returns
the student's Hugging Face folder, `build_side.finetune.run_from_recipe` returns {name: PEFT adapter
folder or full model folder}. A recipe that asks for a stage whose hook is not installed fails
before anything runs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from build_side.adapters import merge_adapters
from build_side.bundle import AdapterFile, BundleSettings, assemble
from build_side.convert import BuildProgress, ConvertedVariant, convert, load_variants, tool_versions
from build_side.fingerprint import dir_digest, path_digest, settings_digest
from build_side.quality import DEFAULT_TEXT, measure
from build_side.recipe import Recipe, input_path, load_recipe
from build_side.registry import bundle_path, publish
from build_side.settings import home_dir
from build_side.sources import prepare
from edge_agent.contracts import SourceInfo
from edge_agent.errors import BuildError, StageUnavailableError
from edge_agent.signing import SigningKey

STATE_FILE = "pipeline-state.json"
HOOKS = {"distill": "build_side.distill", "finetune": "build_side.finetune"}


@dataclass(frozen=True)
class StageResult:
    stage: str
    ran: bool
    detail: str
    seconds: float


@dataclass
class PipelineHooks:
    """How the caller watches the run (the CLI draws bars and lines; tests pass nothing)."""

    stage_done: Callable[[StageResult], None] | None = None
    build_progress: Callable[[BuildProgress], None] | None = None
    quality_progress: Callable[[str, int, int], None] | None = None


@dataclass
class PipelineResult:
    stages: list[StageResult] = field(default_factory=list)
    variants: list[ConvertedVariant] = field(default_factory=list)
    bundle: Path | None = None
    manifest_sha256: str | None = None
    registry: Path | None = None


def stage_hook(stage: str) -> Callable[..., Any]:
    """`run_from_recipe` of the stage's module, or a clear error when it is not installed."""
    module_name = HOOKS[stage]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StageUnavailableError(
            f"the {stage} stage is not available: {module_name} is not installed"
        ) from exc
    hook = getattr(module, "run_from_recipe", None)
    if hook is None:
        raise StageUnavailableError(
            f"the {stage} stage is not available: {module_name} has no run_from_recipe yet; "
            f"remove the {stage} section or run the stage on its own first"
        )
    return hook


class _State:
    def __init__(self, work_dir: Path) -> None:
        self.path = work_dir / STATE_FILE
        try:
            self.data: dict[str, dict] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def unchanged(self, stage: str, inputs: str, output_digest: Callable[[], str | None]) -> dict | None:
        """The last run's record when its inputs match and its output is still as it left it."""
        last = self.data.get(stage)
        if not last or last.get("inputs") != inputs:
            return None
        try:
            current = output_digest()
        except (OSError, BuildError):
            return None
        return last if current is not None and current == last.get("output") else None

    def record(self, stage: str, inputs: str, output: str, **extra: Any) -> None:
        self.data[stage] = {"inputs": inputs, "output": output, "at": datetime.now(UTC).isoformat(), **extra}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, self.path)


def _files_named(settings: Any, recipe_path: Path) -> dict[str, str]:
    """Content digests of the files a stage's settings name, so a changed data file reruns it."""
    found: dict[str, str] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and ("/" in value or "." in value) and len(value) < 4096:
            p = input_path(value, recipe_path)
            if p.is_file() or (p.is_dir() and any(p.iterdir())):
                found[value] = path_digest(p)

    walk(settings)
    return found


def _fingerprint(**parts: Any) -> str:
    return settings_digest(parts)


def _manifest_digest(bundle: Path) -> str:
    return hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()


def _since(record: dict) -> str:
    return record.get("at", "?")[:19].replace("T", " ")


def run_pipeline(
    recipe_path: Path,
    key: SigningKey,
    work_dir: Path | None = None,
    registry: Path | None = None,
    force: bool = False,
    hooks: PipelineHooks | None = None,
    source_override: str | None = None,
) -> PipelineResult:
    """Run every stage the recipe names, in order; returns what ran and what it made.
    `source_override` replaces the recipe's source (same recipe, another model folder)."""
    recipe_path = Path(recipe_path)
    recipe: Recipe = load_recipe(recipe_path)
    if source_override:
        recipe = recipe.model_copy(update={"source": source_override})
    hooks = hooks or PipelineHooks()
    for stage in HOOKS:
        if getattr(recipe, stage) is not None:
            stage_hook(stage)  # fail before any work when a stage is missing
    work = Path(work_dir or recipe.work_dir or Path("work") / "pipeline" / recipe.bundle.name)
    work.mkdir(parents=True, exist_ok=True)
    state = _State(work)
    if force:
        state.data = {}
    result = PipelineResult()
    recipe_sha = hashlib.sha256(recipe_path.read_bytes()).hexdigest()

    def done(stage: str, ran: bool, detail: str, started: float) -> None:
        r = StageResult(stage, ran, detail, time.monotonic() - started)
        result.stages.append(r)
        if hooks.stage_done:
            hooks.stage_done(r)

    # source: content-cached by sources.prepare
    t = time.monotonic()
    src = prepare(recipe.source)
    model_dir, model_sha = src.path, src.sha256
    source = SourceInfo(kind=src.kind, ref=src.ref, sha256=src.sha256)
    done(
        "source",
        not src.cached,
        f"{'prepared' if not src.cached else 'cached'} {src.ref} (sha256 {src.sha256[:12]})",
        t,
    )

    # distill: the student replaces the model
    if recipe.distill is not None:
        t = time.monotonic()
        out = work / "distill"
        inputs = _fingerprint(
            model=model_sha, settings=recipe.distill, files=_files_named(recipe.distill, recipe_path)
        )
        last = state.unchanged("distill", inputs, lambda: dir_digest(Path(state.data["distill"]["path"])))
        if last:
            student = Path(last["path"])
            done("distill", False, f"inputs unchanged since {_since(last)}", t)
        else:
            student = Path(
                stage_hook("distill")(recipe.distill, model_dir, out, recipe_dir=recipe_path.parent)
            )
            state.record("distill", inputs, dir_digest(student), path=str(student))
            done("distill", True, f"student -> {student}", t)
        model_dir, model_sha = student, dir_digest(student)
        source = SourceInfo(kind="hf-folder", ref=f"{src.ref} (distilled)", sha256=model_sha)

    # finetune: adapters merged into the weights (or a full model that replaces them), or exported
    # beside every variant (convert.adapters: export)
    exported: dict[str, Path] = {}
    if recipe.finetune is not None:
        t = time.monotonic()
        out = work / "finetune"
        inputs = _fingerprint(
            model=model_sha, settings=recipe.finetune, files=_files_named(recipe.finetune, recipe_path)
        )

        def outputs_digest() -> str:
            return settings_digest(
                {n: dir_digest(Path(p)) for n, p in state.data["finetune"]["paths"].items()}
            )

        last = state.unchanged("finetune", inputs, outputs_digest)
        if last:
            trained = {n: Path(p) for n, p in last["paths"].items()}
            done("finetune", False, f"inputs unchanged since {_since(last)}", t)
        else:
            hook = stage_hook("finetune")
            trained = {
                n: Path(p)
                for n, p in hook(recipe.finetune, model_dir, out, recipe_dir=recipe_path.parent).items()
            }
            digest = settings_digest({n: dir_digest(p) for n, p in trained.items()})
            state.record("finetune", inputs, digest, paths={n: str(p) for n, p in trained.items()})
            done("finetune", True, f"trained {', '.join(trained)}", t)
        adapters = {n: p for n, p in trained.items() if (p / "adapter_config.json").is_file()}
        full = [p for n, p in trained.items() if n not in adapters]
        if full and (adapters or len(full) > 1):
            raise BuildError("fine-tuning returned several full models; the pipeline can convert only one")
        if recipe.convert.adapters == "export":
            if full:
                raise BuildError(
                    "convert.adapters export ships LoRA adapters; this finetune section trains full models"
                )
            exported = adapters
        else:
            if full:
                model_dir, model_sha = full[0], dir_digest(full[0])
            else:
                model_dir, model_sha = merge_adapters(model_dir, model_sha, adapters)
            source = SourceInfo(
                kind="hf-folder", ref=f"{source.ref} + {', '.join(sorted(trained))}", sha256=model_sha
            )

    # convert (+ quality)
    t = time.monotonic()
    conv = recipe.convert
    convert_dir = work / "convert"
    text = input_path(conv.eval.text, recipe_path) if conv.eval.text else DEFAULT_TEXT
    inputs = _fingerprint(
        model=model_sha,
        variants=[v.model_dump() for v in conv.variants],
        eval=conv.eval.model_dump(),
        text=path_digest(text) if conv.eval.enabled else None,
        builder=tool_versions().get("onnxruntime-genai"),
        adapters={n: dir_digest(p) for n, p in exported.items()},
        finetune=state.data.get("finetune", {}).get("inputs") if exported else None,
    )
    ids = [v.id for v in conv.variants]
    last = state.unchanged("convert", inputs, lambda: dir_digest(convert_dir))
    if last:
        result.variants = load_variants(convert_dir, ids)
        done("convert", False, f"inputs unchanged since {_since(last)} ({', '.join(ids)})", t)
    else:
        specs = [v for v in conv.variants]
        if exported:
            from build_side.finetune.release import export_variants

            result.variants = export_variants(model_dir, exported, specs, convert_dir, source)
        else:
            result.variants = convert(model_dir, specs, convert_dir, source, progress=hooks.build_progress)
        if conv.eval.enabled:
            result.variants = measure(
                convert_dir,
                ids,
                text_path=text,
                window=conv.eval.window,
                max_tokens=conv.eval.tokens,
                speed=conv.eval.speed,
                progress=hooks.quality_progress,
            )
        detail = f"built {', '.join(ids)}"
        if exported:
            from build_side.finetune.release import score_exported

            scored = score_exported(convert_dir, ids, exported)
            detail += f" with adapters {', '.join(exported)}: " + "; ".join(
                f"{v} " + ", ".join(f"{a} {s.split} {s.value:.2f}" for a, ss in by.items() for s in ss)
                for v, by in scored.items()
            )
        state.record("convert", inputs, dir_digest(convert_dir))
        done("convert", True, detail, t)

    # bundle
    t = time.monotonic()
    b = recipe.bundle
    adapters_files = [a.model_copy(update={"path": input_path(a.path, recipe_path)}) for a in b.adapters]
    if exported:
        from build_side.finetune.release import exported_files

        adapters_files += [
            AdapterFile(name=name, path=path, variants=[vid])
            for vid in (b.variants or ids)
            for name, path in exported_files(convert_dir, vid).items()
        ]
    settings = BundleSettings(
        name=b.name,
        version=b.version,
        description=b.description,
        task=b.task,
        variants=b.variants or ids,  # the recipe's order, not the folder's
        generation_defaults=b.generation_defaults,
        adapters=adapters_files,
    )
    bundles_dir = work / "bundles"
    final = bundles_dir / b.name / b.version
    inputs = _fingerprint(
        convert=state.data["convert"]["output"],
        settings=settings.model_dump(mode="json"),
        adapters={a.name: path_digest(a.path) for a in adapters_files if a.path.is_file()},
        key=key.key_id,
    )
    last = state.unchanged("bundle", inputs, lambda: _manifest_digest(final))
    if last:
        done("bundle", False, f"inputs unchanged since {_since(last)} ({b.name}@{b.version})", t)
        result.manifest_sha256 = last["output"]
    else:
        made = assemble(convert_dir, bundles_dir, settings, key, recipe=(str(recipe_path), recipe_sha))
        result.manifest_sha256 = made.manifest_sha256
        state.record("bundle", inputs, made.manifest_sha256)
        done("bundle", True, f"{b.name}@{b.version} signed by {key.key_id} -> {final}", t)
    result.bundle = final

    # publish: the registry itself says whether this exact manifest is already there
    if recipe.publish is not None:
        t = time.monotonic()
        root = Path(registry or recipe.publish.registry or home_dir() / "registry")
        result.registry = root
        held = bundle_path(root, b.name, b.version) / "manifest.json"
        if held.is_file() and hashlib.sha256(held.read_bytes()).hexdigest() == result.manifest_sha256:
            done("publish", False, f"{root} already holds this {b.name}@{b.version}", t)
        else:
            pub = publish(final, root, key)
            done("publish", True, f"{pub.ref} -> {pub.path}", t)
    return result


__all__ = ["PipelineHooks", "PipelineResult", "StageResult", "run_pipeline", "stage_hook"]
