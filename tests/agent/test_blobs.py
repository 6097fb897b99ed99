"""The store by content, without an agent: versions share files, removal frees only what is unshared,
and where hardlinks fail the files are copied and still verified."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edge_agent.bundle_check import MANIFEST, SIGNATURE, check_file
from edge_agent.contracts import BundleManifest
from edge_agent.deploy.reuse import LocalFiles
from edge_agent.deploy.store import Store
from tests.conftest import CHANGED, VARIANT


def install(store: Store, bundle: Path, local: LocalFiles) -> tuple[str, int]:
    """What the agent does, minus HTTP: stage what the device holds, copy the rest from the bundle,
    verify and pool every file, install. Returns (ref, bytes that had to come from the bundle)."""
    manifest = BundleManifest.model_validate_json((bundle / MANIFEST).read_bytes())
    staging = store.staging_dir(manifest.ref, "0" * 64)
    staging.mkdir(parents=True)
    for name in (MANIFEST, SIGNATURE):
        shutil.copy(bundle / name, staging / name)
    files = manifest.files_for(VARIANT)
    local.stage(files, staging)
    fetched = 0
    for f in files:
        if not (staging / f.path).exists():
            (staging / f.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(bundle / f.path, staging / f.path)
            fetched += f.size
        check_file(staging, f)
        local.adopt(staging / f.path, f)
    store.install(staging, manifest.ref, VARIANT, "0" * 64)
    return manifest.ref, fetched


def test_versions_share_files_and_removal_frees_only_the_unshared(
    tmp_path: Path, make_bundle, patch_release
) -> None:
    b0, b1 = make_bundle("1.2.0"), patch_release("1.2.1", publish_it=False)
    store = Store(tmp_path / "state")
    local = LocalFiles(store)
    ref0, got0 = install(store, b0, local)
    one = store.usage()
    ref1, got1 = install(store, b1, local)
    both = store.usage()
    changed = (b1 / CHANGED).stat().st_size
    assert got1 == changed and got0 > 0.99 * one.disk_bytes
    assert both.disk_bytes - one.disk_bytes < 2 * changed + 4096  # the new file, manifest, marker
    assert both.logical_bytes > 1.9 * one.logical_bytes

    store.remove(ref0)
    # 1.2.0's own file outlives its version in the pool (a verified part of an earlier download)...
    again = store.staging_dir(ref0, "2" * 64)
    m0 = BundleManifest.model_validate_json((b0 / MANIFEST).read_bytes())
    staged = local.stage(m0.files_for(VARIANT), again)
    assert staged.reused_bytes == sum(f.size for f in m0.files_for(VARIANT)) and not staged.copied_bytes
    store.discard_staging(again)
    # ...until the pool is pruned: removing 1.2.0 freed only what 1.2.1 does not share
    assert store.blobs.prune() == (b0 / CHANGED).stat().st_size
    after = store.usage()
    assert after.disk_bytes < both.disk_bytes
    v1 = store.get(ref1)
    for f in v1.manifest().files_for(VARIANT):
        check_file(v1.path, f)  # 1.2.1 lost nothing it shares with the removed version
    assert all(p.stat().st_nlink == 2 for p in store.blobs.root.iterdir())


def test_files_are_copied_where_hardlinks_fail_and_still_verified(
    tmp_path: Path, make_bundle, patch_release
) -> None:
    other_fs = Path("/dev/shm")
    if not other_fs.is_dir() or os.stat(other_fs).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's temp folder")
    b0, b1 = make_bundle("1.2.0"), patch_release("1.2.1", publish_it=False)
    state = tmp_path / "state"
    store = Store(state)
    local = LocalFiles(store)
    install(store, b0, local)
    # staging on another filesystem: no hardlink can reach it
    elsewhere = other_fs / f"staging-{os.getpid()}-{tmp_path.name}"
    elsewhere.mkdir()
    try:
        shutil.rmtree(store.staging_root)
        store.staging_root.symlink_to(elsewhere)
        manifest = BundleManifest.model_validate_json((b1 / MANIFEST).read_bytes())
        staging = store.staging_dir(manifest.ref, "1" * 64)
        files = manifest.files_for(VARIANT)
        staged = local.stage(files, staging)
        assert staged.copied_bytes == staged.reused_bytes == sum(f.size for f in files if f.path != CHANGED)
        for f in files:
            if f.path != CHANGED:
                check_file(staging, f)
                assert (staging / f.path).stat().st_nlink == 1
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
