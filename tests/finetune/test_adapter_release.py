"""An adapter-only release: the same base with one more adapter, built by the pipeline, keeps every
base file byte for byte, so the registry stores and a device fetches only the new adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge_agent.signing import SigningKey


def recipe_for(path: Path, task: Path, other: Path, version: str, with_shades: bool) -> Path:
    adapters = {"colours": {"data": {"train": task.name}}}
    if with_shades:
        adapters["shades"] = {"data": {"train": other.name}}
    path.write_text(
        yaml.safe_dump(
            {
                "source": "tiny",
                "finetune": {
                    "train": {"max_steps": 2, "batch_size": 8, "lr": 1e-2},
                    "eval": {"before": False, "max_new_tokens": 2},
                    "lora": {"target_modules": ["q_proj", "v_proj"]},
                    "adapters": adapters,
                },
                "convert": {"adapters": "export", "variants": ["cpu-int4"], "eval": {"enabled": False}},
                "bundle": {"name": "tiny-colours", "version": version},
            }
        )
    )
    return path


@pytest.mark.slow  # two pipeline runs (fine-tune, export, bundle, publish): ~60 s on 2 cores
def test_an_adapter_only_release_reuses_the_base_files_byte_for_byte(
    tiny_model_dir: Path, task_file: Path, tmp_path: Path, signing_key: SigningKey
) -> None:
    import shutil

    from build_side.pipeline import run_pipeline
    from build_side.registry import publish
    from build_side.registry_blobs import disk_bytes
    from edge_agent.bundle_check import MANIFEST, SIGNATURE
    from edge_agent.contracts import BundleManifest
    from edge_agent.deploy.reuse import LocalFiles
    from edge_agent.deploy.store import Store
    from tests.finetune.conftest import write_task

    other = write_task(tmp_path / "shades.jsonl", seed=3)
    args = {"work_dir": tmp_path / "work", "source_override": str(tiny_model_dir)}
    from build_side.settings import cache_dir

    registry = tmp_path / "registry"
    bases = cache_dir() / "lora-bases"
    before = set(bases.iterdir()) if bases.is_dir() else set()
    first = run_pipeline(
        recipe_for(tmp_path / "a.yaml", task_file, other, "0.2.0", False), signing_key, **args
    )
    publish(first.bundle, registry, signing_key)
    one = disk_bytes(registry)
    second = run_pipeline(
        recipe_for(tmp_path / "b.yaml", task_file, other, "0.2.1", True), signing_key, **args
    )
    publish(second.bundle, registry, signing_key)
    two = disk_bytes(registry)

    def files(bundle: Path) -> dict[str, tuple[str, int]]:
        m = BundleManifest.model_validate_json((bundle / MANIFEST).read_bytes())
        return {f.path: (f.sha256, f.size) for f in m.files_for("cpu-int4")}

    old, new = files(first.bundle), files(second.bundle)
    added = {p for p in new if new[p] not in old.values()}
    assert len(added) == 1 and next(iter(added)).endswith("shades.onnx_adapter"), added
    base = {p for p in new if p.startswith("cpu-int4/")}
    assert base and all(new[p] == old[p] for p in base), "every base file is byte for byte the same"
    built = [s for s in second.stages if s.stage == "convert"]
    assert built and built[0].ran, "convert ran again for the new adapter set..."
    assert len(set(bases.iterdir()) - before) == 1, "...and took the base from its cache, not the builder"
    adapter_bytes = new[next(iter(added))][1]
    print(
        f"\nrelease 0.2.1: {sum(s for _, s in new.values())} B, new {adapter_bytes} B; registry {one} -> {two} B"
    )
    assert two - one < adapter_bytes + (64 << 10)  # the new adapter and the small manifest files

    # a device holding 0.2.0 stages everything of 0.2.1 but the new adapter from its own store
    store = Store(tmp_path / "device")
    staging = store.staging_dir("tiny-colours@0.2.0", "0" * 64)
    shutil.copytree(first.bundle, staging)
    store.install(staging, "tiny-colours@0.2.0", "cpu-int4", "0" * 64)
    m1 = BundleManifest.model_validate_json((second.bundle / MANIFEST).read_bytes())
    target = store.staging_dir("tiny-colours@0.2.1", "1" * 64)
    target.mkdir()
    for name in (MANIFEST, SIGNATURE):
        shutil.copy(second.bundle / name, target / name)
    staged = LocalFiles(store).stage(m1.files_for("cpu-int4"), target)
    missing = [f.path for f in m1.files_for("cpu-int4") if not (target / f.path).exists()]
    assert missing == list(added) and staged.reused_bytes == sum(s for _, s in new.values()) - adapter_bytes
