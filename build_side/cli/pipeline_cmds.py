"""`slmops pipeline run RECIPE.yaml`: every stage of a recipe, each skipped when nothing it uses changed."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from build_side.cli.output import console, print_json

pipeline_app = typer.Typer(
    help="Run build recipes (source -> distill -> finetune -> convert -> bundle -> publish)."
)


def register(app: typer.Typer) -> None:
    app.add_typer(pipeline_app, name="pipeline")


@pipeline_app.command("run")
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML (see manifests/recipes/)."),
    work_dir: Path = typer.Option(None, help="Stage outputs and state (default: the recipe's work_dir)."),
    registry: Path = typer.Option(
        None, "--registry", "-r", help="Registry to publish to (overrides the recipe)."
    ),
    key: Path = typer.Option(
        None, "--key", "-k", help="Private signing key (default: recipe, then $SLMOPS_HOME/keys)."
    ),
    source: str = typer.Option(None, "--source", help="Model source to use instead of the recipe's."),
    force: bool = typer.Option(False, "--force", help="Run every stage even when its inputs are unchanged."),
    json_out: bool = typer.Option(False, "--json", help="Print the stages and their results as JSON."),
) -> None:
    """Run RECIPE: prepare the source, (distil, fine-tune,) convert and measure the variants, bundle and
    sign the release, publish it. A stage whose inputs (content hashes of the model, the data files it
    names and its settings) are the same as when it last ran is skipped and says so."""
    from build_side.cli.convert_cmds import (
        build_progress,
        print_wide,
        progress_bars,
        quality_progress,
        quality_table,
    )
    from build_side.cli.keys_cmds import default_signing_key
    from build_side.pipeline import PipelineHooks, StageResult, run_pipeline
    from build_side.recipe import input_path, load_recipe

    started = time.monotonic()
    parsed = load_recipe(recipe)
    recipe_key = parsed.publish.key if parsed.publish and parsed.publish.key else None
    signing_key = default_signing_key(key or (input_path(recipe_key, recipe) if recipe_key else None))

    with progress_bars(to_stderr=json_out) as bars:

        def stage_done(r: StageResult) -> None:
            mark = "[green]ran[/]    " if r.ran else "[cyan]skipped[/]"
            bars.console.print(f"{mark} {r.stage:<9} {r.detail}  [dim]{r.seconds:.1f} s[/]")

        hooks = PipelineHooks(stage_done, build_progress(bars), quality_progress(bars))
        result = run_pipeline(
            recipe,
            signing_key,
            work_dir=work_dir,
            registry=registry,
            force=force,
            hooks=hooks,
            source_override=source,
        )
    elapsed = time.monotonic() - started
    if json_out:
        print_json(
            {
                "stages": [
                    {"stage": s.stage, "ran": s.ran, "detail": s.detail, "seconds": round(s.seconds, 2)}
                    for s in result.stages
                ],
                "bundle": str(result.bundle),
                "manifest_sha256": result.manifest_sha256,
                "registry": str(result.registry) if result.registry else None,
                "variants": [v.model_dump(mode="json", exclude_none=True) for v in result.variants],
                "seconds": round(elapsed, 2),
            }
        )
        return
    print_wide(quality_table(result.variants, f"{parsed.bundle.name}@{parsed.bundle.version}"))
    ran = [s.stage for s in result.stages if s.ran]
    summary = f"ran {', '.join(ran)}" if ran else "nothing changed: every stage skipped"
    console.print(f"done in {elapsed:.1f} s ({summary}); bundle {result.bundle}")
