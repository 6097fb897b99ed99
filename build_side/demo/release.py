"""The demo's release: the repository's ops recipe run through the build pipeline, once.

The recipe (manifests/recipes/finetune-smollm2-ops-adapters.yaml) trains two LoRA adapters on
SmolLM2-135M-Instruct (a fleet operator's requests as intents and as JSON commands), builds cpu-fp32
and cpu-int4 bases with LoRA inputs, exports each adapter beside each base, measures the bases and
scores the adapters, then bundles, signs and publishes them. A registry never holds two different
manifests for one name@version, so a release already there is reused as it is: the second run of
the demo builds nothing (and the pipeline itself skips unchanged stages; trained adapters are cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from build_side.fleet.catalog import manifest_path
from edge_agent.errors import BuildError
from edge_agent.signing import SigningKey

RECIPE = Path(__file__).resolve().parents[2] / "manifests" / "recipes" / "finetune-smollm2-ops-adapters.yaml"


@dataclass(frozen=True)
class Release:
    ref: str
    path: Path
    variants: list[str]
    built: bool  # False: reused from the registry
    evals: dict[str, str]  # variant -> one line of its build-time quality figures
    adapters: dict[str, str]  # adapter -> what it is for and its scores, one line


def recipe_bundle(recipe: Path = RECIPE) -> tuple[str, str]:
    """(name, version) the recipe publishes."""
    from build_side.recipe import load_recipe

    if not recipe.is_file():
        raise BuildError(f"the demo's recipe {recipe} is missing (run the demo from a repository checkout)")
    b = load_recipe(recipe).bundle
    return b.name, b.version


def _held(registry: Path, name: str, version: str) -> Release | None:
    from edge_agent.bundle_check import parse_manifest

    path = registry / manifest_path(name, version)
    if not path.is_file():
        return None
    m = parse_manifest(path.read_bytes(), path)
    return Release(m.ref, path.parent, [v.id for v in m.variants], False, _evals(m), _adapter_lines(m))


def _evals(manifest) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = {}
    for v in manifest.variants:
        e = v.eval
        if e is None:
            continue
        parts = [f"{e.size_bytes / 1e6:.0f} MB", f"ppl {e.perplexity:.2f}"]
        if e.kl_divergence is not None and v.id != e.reference:
            parts.append(f"KL {e.kl_divergence:.4f}")
        if e.top1_agreement is not None and v.id != e.reference:
            parts.append(f"top-1 {e.top1_agreement:.1%}")
        out[v.id] = ", ".join(parts)
    return out


def _adapter_lines(manifest) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = {}
    for a in manifest.adapters:
        scores = ", ".join(f"{s.variant} {s.split} {s.metric} {s.value:.2f}" for s in a.scores)
        out[a.name] = f"{a.trained_for}" + (f"\n      {scores}" if scores else "")
    return out


def ensure_release(registry: Path, key: SigningKey, work: Path, console: Console) -> Release:
    """Run the recipe into `registry` unless it already holds the release; show the build's progress."""
    name, version = recipe_bundle()
    found = _held(registry, name, version)
    if found:
        return found
    from build_side.cli.convert_cmds import build_progress, progress_bars, quality_progress
    from build_side.pipeline import PipelineHooks, StageResult, run_pipeline

    with progress_bars() as bars:

        def stage_done(r: StageResult) -> None:
            mark = "[green]ran[/]    " if r.ran else "[cyan]skipped[/]"
            bars.console.print(f"{mark} {r.stage:<9} {r.detail}  [dim]{r.seconds:.1f} s[/]")

        run_pipeline(
            RECIPE,
            key,
            work_dir=work,
            registry=registry,
            hooks=PipelineHooks(stage_done, build_progress(bars), quality_progress(bars)),
        )
    made = _held(registry, name, version)
    if made is None:
        raise BuildError(f"the pipeline ran but {registry} does not hold {name}@{version}")
    return Release(made.ref, made.path, made.variants, True, made.evals, made.adapters)
