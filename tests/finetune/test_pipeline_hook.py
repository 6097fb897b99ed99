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
