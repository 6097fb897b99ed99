"""A recipe's `finetune` section -> one config per adapter -> trained adapters, for the pipeline.

    finetune:
      method: lora              # shared defaults: method, lora, train, eval, data ...
      train: {epochs: 2}
      adapters:                 # optional: several adapters on one base, each on its own data
        intents: {data: {train: manifests/data/intents.jsonl}, eval: {max_new_tokens: 4}}
        commands: {data: {train: manifests/data/commands.jsonl}}

Without `adapters` the section is one run. Relative data paths are read from the working directory
or, failing that, from the recipe's folder.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from build_side.finetune.config import FinetuneConfig
from build_side.finetune.trainer import RunResult, finetune
from edge_agent.errors import RecipeError


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve(path: str | Path, recipe_dir: Path | None) -> Path:
    """A data file named in a recipe: absolute or as given when it exists, else beside the recipe,
    else in the repository (so a shipped recipe runs from any working directory)."""
    from build_side.recipe import REPO

    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    for base in (recipe_dir, REPO):
        if base is not None and (base / p).exists():
            return (base / p).resolve()
    return p


def configs_from_section(
    section: dict[str, Any],
    recipe_dir: Path | None = None,
    where: str = "finetune",
    overrides: dict[str, Any] | None = None,
) -> list[FinetuneConfig]:
    """Validate the section; each adapter's settings are the shared defaults with its own on top,
    and `overrides` (command-line flags) on top of both."""
    if not isinstance(section, dict):
        raise RecipeError(where, "the finetune section must be a mapping")
    shared = {k: v for k, v in section.items() if k != "adapters"}
    adapters = section.get("adapters")
    if adapters is None:
        raw = [shared]
    elif isinstance(adapters, dict) and adapters:
        raw = [_merge(shared, {**(over or {}), "name": name}) for name, over in adapters.items()]
    else:
        raise RecipeError(f"{where}.adapters", "must map adapter names to their settings")
    configs = []
    for item in raw:
        item = _merge(item, overrides or {})
        label = f"{where}.adapters.{item['name']}" if adapters else where
        data = item.get("data")
        if isinstance(data, dict):
            for key in ("train", "validation"):
                if data.get(key):
                    data[key] = str(_resolve(data[key], recipe_dir))
        heldout = (
            (item.get("release") or {}).get("heldout") if isinstance(item.get("release"), dict) else None
        )
        if isinstance(heldout, dict) and heldout.get("path"):
            heldout["path"] = str(_resolve(heldout["path"], recipe_dir))
        try:
            configs.append(FinetuneConfig.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise RecipeError(label, problems) from exc
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise RecipeError(where, f"adapter names must be unique, got {names}")
    return configs


def run_configs(
    configs: list[FinetuneConfig],
    base_dir: Path,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
) -> list[RunResult]:
    return [finetune(c, base_dir, Path(out_dir) / c.name, resume=resume, progress=progress) for c in configs]


def run_key(config: FinetuneConfig, base_dir: Path) -> str:
    """What decides a run's result: its whole config (data files by content) and the base's content."""
    from build_side.fingerprint import dir_digest, file_digest, settings_digest

    data = config.data
    files = {k: file_digest(p) for k, p in (("train", data.train), ("validation", data.validation)) if p}
    settings = config.model_dump(mode="json", exclude={"data": {"train", "validation"}})
    return settings_digest({"config": settings, "files": files, "base": dir_digest(Path(base_dir))})


def cached_run(config: FinetuneConfig, base_dir: Path, *, progress: bool = True) -> Path:
    """Train one adapter in the content-addressed cache (`$SLMOPS_CACHE_DIR/finetune/<key>/<name>/`),
    or return the adapter a finished run with the same inputs left there: every recipe that trains the
    same adapter on the same base (a release, a distillation teacher) trains it once. An interrupted
    run resumes from its last checkpoint."""
    from build_side.settings import cache_dir

    run_dir = cache_dir() / "finetune" / run_key(config, base_dir)[:20] / config.name
    record = run_dir / "finetune.json"
    if record.is_file():
        artifact = Path(json.loads(record.read_text())["result"]["artifact"])
        if artifact.is_dir():
            return artifact
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    return finetune(config, Path(base_dir), run_dir, resume=resume, progress=progress).artifact


def run_from_recipe(
    section: dict[str, Any],
    base_dir: Path,
    out_dir: Path,
    *,
    recipe_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    cache: bool = True,
) -> dict[str, Path]:
    """Train every adapter of the section on `base_dir`; {name: PEFT adapter folder (or full model)}.

    Each run's folder also holds `finetune.json` (config, scores, history). With `cache` (the
    pipeline's way) runs live in the content-addressed cache and `out_dir/<name>` links to each;
    without it they are written to `out_dir/<name>/`.
    """
    configs = configs_from_section(section, recipe_dir)
    if not cache:
        results = run_configs(configs, Path(base_dir), Path(out_dir), resume=resume, progress=progress)
        return {r.name: r.artifact for r in results}
    out: dict[str, Path] = {}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for config in configs:
        artifact = cached_run(config, base_dir, progress=progress)
        link = Path(out_dir) / config.name
        if link.is_symlink() or not link.exists():
            link.unlink(missing_ok=True)
            link.symlink_to(artifact.parent, target_is_directory=True)
        out[config.name] = artifact
    return out
