"""The pipeline's finetune stage calls `run_from_recipe`: the adapter it trains ends up in the bundle."""

from __future__ import annotations

from pathlib import Path

import yaml

from edge_agent.signing import SigningKey


def test_a_recipe_with_a_finetune_section_builds_a_bundle(
    tiny_model_dir: Path, task_file: Path, tmp_path: Path, signing_key: SigningKey
) -> None:
    from build_side.pipeline import run_pipeline

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "source": "tiny",
                "finetune": {
                    "train": {"max_steps": 2, "batch_size": 8, "lr": 1e-2},
                    "eval": {"before": False, "max_new_tokens": 2},
                    "adapters": {"colours": {"data": {"train": task_file.name}}},  # found beside the recipe
                },
                "convert": {"variants": ["cpu-fp32"], "eval": {"enabled": False}},
                "bundle": {"name": "tiny-colours", "version": "0.1.0"},
            }
        )
    )
    result = run_pipeline(
        recipe, signing_key, work_dir=tmp_path / "work", source_override=str(tiny_model_dir)
    )
    ran = {s.stage: s.ran for s in result.stages}
    assert ran["finetune"] and ran["convert"] and ran["bundle"]
    assert (tmp_path / "work" / "finetune" / "colours" / "finetune.json").is_file()
    assert result.bundle is not None and (result.bundle / "cpu-fp32" / "model.onnx").is_file()


def test_a_recipe_that_exports_adapters_ships_them_beside_every_variant(
    tiny_model_dir: Path, task_file: Path, tmp_path: Path, signing_key: SigningKey
) -> None:
    """convert.adapters: export -> one LoRA-input base per variant, each adapter exported beside each,
    scored there (validation and held-out) and listed in the manifest with its card and bases."""
    from build_side.pipeline import run_pipeline
    from edge_agent.contracts import BundleManifest
    from tests.finetune.conftest import write_task

    other = write_task(tmp_path / "shades.jsonl", seed=3)
    recipe = tmp_path / "recipe.yaml"
    heldout = Path(__file__).resolve().parents[2] / "manifests" / "eval" / "ops_heldout.jsonl"
    recipe.write_text(
        yaml.safe_dump(
            {
                "source": "tiny",
                "finetune": {
                    "train": {"max_steps": 2, "batch_size": 8, "lr": 1e-2},
                    "eval": {"before": False, "max_new_tokens": 2},
                    "lora": {"target_modules": ["q_proj", "v_proj"]},
                    "adapters": {
                        "colours": {
                            "trained_for": "name a thing's colour",
                            "data": {
                                "train": task_file.name,
                                "template": {"system": "Answer with a colour."},
                            },
                            "release": {
                                "answer_format": "label",
                                "heldout": {"path": str(heldout), "skill": "intent"},
                            },
                        },
                        "shades": {"data": {"train": other.name}, "release": {"max_tokens": 3}},
                    },
                },
                "convert": {
                    "adapters": "export",
                    "variants": ["cpu-fp32", {"id": "cpu-int4", "block_size": 32}],
                    "eval": {"enabled": False},
                },
                "bundle": {"name": "tiny-colours", "version": "0.2.0"},
            }
        )
    )
    args = {"work_dir": tmp_path / "work", "source_override": str(tiny_model_dir)}
    result = run_pipeline(recipe, signing_key, **args)
    assert result.bundle is not None
    manifest = BundleManifest.model_validate_json((result.bundle / "manifest.json").read_bytes())
    assert [a.name for a in manifest.adapters] == ["colours", "shades"]
    digests = {v.id: v.weights_digest() for v in manifest.variants}
    for adapter in manifest.adapters:
        assert {b.variant: b.weights_sha256 for b in adapter.bases} == digests
        assert all((result.bundle / b.file).is_file() for b in adapter.bases)
    colours = manifest.adapters[0]
    assert (colours.trained_for, colours.prompt.system) == ("name a thing's colour", "Answer with a colour.")
    assert colours.prompt.answer_format == "label" and set(colours.prompt.labels) <= {"red", "green", "blue"}
    assert colours.prompt.probe and colours.generation.max_tokens == 2
    assert manifest.adapters[1].generation.max_tokens == 3
    scored = {(s.variant, s.split) for s in colours.scores}
    assert scored == {(v, split) for v in digests for split in ("validation", "heldout")}
    assert {s.examples for s in colours.scores if s.split == "heldout"} == {80}
    assert {(s.variant, s.split) for s in manifest.adapters[1].scores} == {(v, "validation") for v in digests}

    again = run_pipeline(recipe, signing_key, **args)
    assert not any(s.ran for s in again.stages if s.stage != "source"), again.stages
