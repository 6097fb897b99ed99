"""`slmops pipeline run`: a recipe builds, signs and publishes; a second run skips every stage."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from build_side.recipe import load_recipe
from edge_agent.bundle_check import verify_bundle
from edge_agent.errors import RecipeError, StageUnavailableError
from edge_agent.signing import SigningKey, TrustedKeys
from tests.conftest import REPO, cli

TINY_RECIPE = REPO / "manifests" / "recipes" / "tiny-chat.yaml"


def run_pipeline(recipe: Path, *args: str, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SLMOPS_HOME=str(home))
    argv = cli("slmops", "pipeline", "run", str(recipe), *args, "--json")
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)


def test_second_run_skips_every_stage_and_a_change_reruns_only_what_it_touches(
    tiny_model_dir: Path, tmp_path: Path, signing_key: SigningKey, keys_dir: Path
) -> None:
    home = tmp_path / "home"
    signing_key.save(home / "keys")
    work, registry = tmp_path / "work", tmp_path / "registry"
    args = ("--source", str(tiny_model_dir), "--work-dir", str(work), "--registry", str(registry))

    first = run_pipeline(TINY_RECIPE, *args, home=home)
    assert first.returncode == 0, first.stderr[-3000:]
    doc = json.loads(first.stdout)
    assert [(s["stage"], s["ran"]) for s in doc["stages"]][1:] == [
        ("convert", True),
        ("bundle", True),
        ("publish", True),
    ]
    published = registry / "bundles" / "tiny-chat" / "0.1.0"
    report = verify_bundle(published, TrustedKeys.from_paths([keys_dir]))
    assert report.ok and [v.id for v in report.manifest.variants] == ["cpu-fp32", "cpu-int4"]
    assert report.manifest.variant("cpu-int4").eval.top1_agreement is not None
    assert report.manifest.source.recipe_sha256 is not None

    started = time.monotonic()
    second = run_pipeline(TINY_RECIPE, *args, home=home)
    assert second.returncode == 0, second.stderr[-3000:]
    stages = json.loads(second.stdout)["stages"]
    assert not any(s["ran"] for s in stages), stages
    assert all(
        "unchanged" in s["detail"] or "already holds" in s["detail"] or "cached" in s["detail"]
        for s in stages
    )
    assert time.monotonic() - started < 60  # interpreter start-up included; nothing is rebuilt

    # A new version re-bundles and publishes, but the converted variants are reused.
    bumped = tmp_path / "bumped.yaml"
    bumped.write_text(TINY_RECIPE.read_text().replace("version: 0.1.0", "version: 0.2.0"))
    third = run_pipeline(bumped, *args, home=home)
    assert third.returncode == 0, third.stderr[-3000:]
    ran = {s["stage"]: s["ran"] for s in json.loads(third.stdout)["stages"]}
    assert ran == {"source": False, "convert": False, "bundle": True, "publish": True}
    assert (registry / "bundles" / "tiny-chat" / "0.2.0" / "manifest.json").is_file()


BAD = """\
source: x
convert:
  variants:
    - cpu-fp32
    - id: cpu-int4
      block_size: 33
bundle:
  name: Tiny Chat
  version: 1.0.0
"""


def test_a_bad_recipe_names_the_key_and_the_line(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(BAD)
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe)
    text = str(err.value)
    assert f"{recipe}:6: convert.variants.1.block_size:" in text
    assert f"{recipe}:8: bundle.name:" in text

    recipe.write_text(
        "source: x\nconvert:\n  variants: [cpu-fp32]\n  colour: blue\nbundle: {name: t, version: 1.0.0}\n"
    )
    with pytest.raises(RecipeError, match=r"bad\.yaml:4: convert\.colour: Extra inputs"):
        load_recipe(recipe)
    recipe.write_text("source: x\nconvert:\n  variants: [cpu-fp32]\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml:1: bundle: Field required"):
        load_recipe(recipe)
    recipe.write_text("source: x\nconvert: [\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml:3: not valid YAML"):
        load_recipe(recipe)

    # through the CLI: one clear message, exit status 1, no traceback
    recipe.write_text(BAD)
    proc = subprocess.run(cli("slmops", "pipeline", "run", str(recipe)), capture_output=True, text=True)
    assert proc.returncode == 1 and "bad.yaml:6: convert.variants.1.block_size" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_stage_without_its_module_is_refused_before_any_work(
    tmp_path: Path, signing_key: SigningKey
) -> None:
    from build_side.pipeline import HOOKS
    from build_side.pipeline import run_pipeline as run

    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY_RECIPE.read_text() + "distill: {prompts: p.jsonl}\n")
    HOOKS["distill"] = "build_side.no_such_distill_module"
    try:
        with pytest.raises(StageUnavailableError, match="distill stage is not available"):
            run(recipe, signing_key, work_dir=tmp_path / "w")
    finally:
        HOOKS["distill"] = "build_side.distill"
    assert not (tmp_path / "w").exists()
