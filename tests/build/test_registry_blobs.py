"""The registry keeps each file's content once (blobs/sha256, hardlinked into version folders), and
plain static URLs keep working."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx

from build_side.registry import publish
from build_side.registry_blobs import blob_path, disk_bytes
from edge_agent.contracts import BundleManifest
from edge_agent.hashing import sha256_bytes, sha256_file
from edge_agent.signing import SigningKey
from tests.conftest import CHANGED, cli


def manifest_of(bundle: Path) -> BundleManifest:
    return BundleManifest.model_validate_json((bundle / "manifest.json").read_bytes())


def test_a_patch_release_adds_one_file_to_the_registry_and_serves_plain_urls(
    make_bundle, patch_release, registry_dir: Path, registry_server: str, signing_key: SigningKey, keys_dir
) -> None:
    v0 = publish(make_bundle("1.2.0"), registry_dir, signing_key).path
    one = disk_bytes(registry_dir)
    v1 = patch_release("1.2.1")
    two = disk_bytes(registry_dir)
    m1 = manifest_of(v1)
    size = sum(f.size for f in m1.all_files())
    changed = (v1 / CHANGED).stat().st_size
    print(f"\nregistry disk: one release {one} B, both {two} B ({two / one:.4f}x); release {size} B")
    assert two - one < 0.01 * size
    for f in m1.all_files():
        shared = os.path.samefile(v0 / f.path, v1 / f.path)
        assert shared == (f.path != CHANGED), f.path
        assert os.path.samefile(v1 / f.path, blob_path(registry_dir, f.sha256))

    # any static server: the version folder's plain URLs answer the bytes the manifest names
    with httpx.Client(base_url=registry_server) as client:
        for f in m1.all_files():
            body = client.get(f"/bundles/tiny-chat/1.2.1/{f.path}").content
            assert sha256_bytes(body) == f.sha256, f.path

    proc = subprocess.run(
        cli("slmops", "registry", "ls", str(registry_dir), "-k", str(keys_dir), "--json"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    by_version = {b["version"]: b for b in doc["bundles"]}
    size0 = sum(f.size for f in manifest_of(v0).all_files())
    assert by_version["1.2.0"]["stored_bytes"] == by_version["1.2.0"]["size_bytes"] == size0
    assert by_version["1.2.1"]["stored_bytes"] == changed
    assert doc["size"]["logical_bytes"] == size0 + size
    assert doc["size"]["stored_bytes"] == size0 + changed
    assert doc["size"]["disk_bytes"] == two
    text = subprocess.run(
        cli("slmops", "registry", "ls", registry_server, "-k", str(keys_dir)), capture_output=True, text=True
    ).stdout
    assert "stored MB" in text and "stored (each file's content once)" in text


def test_a_damaged_blob_is_replaced_not_linked_into_a_new_release(
    make_bundle, registry_dir: Path, signing_key: SigningKey
) -> None:
    v0 = publish(make_bundle("1.2.0"), registry_dir, signing_key).path
    rel = "cpu-int4/tokenizer.json"
    assert (v0 / rel).stat().st_mode & 0o777 == 0o444, "a shared blob is read-only"
    os.chmod(v0 / rel, 0o644)  # disk rot, or someone who forced it
    with open(v0 / rel, "r+b") as fh:  # in place: the blob is the same inode
        fh.seek(10)
        byte = fh.read(1)
        fh.seek(10)
        fh.write(bytes([byte[0] ^ 1]))
    v1 = publish(make_bundle("1.3.0"), registry_dir, signing_key).path
    entry = next(f for f in manifest_of(v1).all_files() if f.path == rel)
    assert sha256_file(v1 / rel) == entry.sha256
    assert not os.path.samefile(v0 / rel, v1 / rel)
    assert os.path.samefile(v1 / rel, blob_path(registry_dir, entry.sha256))


def test_dedupe_shares_the_files_of_a_registry_published_with_copies(
    make_bundle, patch_release, registry_dir: Path, signing_key: SigningKey
) -> None:
    v0 = publish(make_bundle("1.2.0"), registry_dir, signing_key).path
    v1 = patch_release("1.2.1")
    # as a registry published before blobs existed: every file a copy of its own
    shutil.rmtree(registry_dir / "blobs")
    for v in (v0, v1):
        for f in manifest_of(v).all_files():
            data = (v / f.path).read_bytes()
            (v / f.path).unlink()
            (v / f.path).write_bytes(data)
    copies = disk_bytes(registry_dir)
    proc = subprocess.run(
        cli("slmops", "registry", "dedupe", str(registry_dir)), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    after = disk_bytes(registry_dir)
    m1 = manifest_of(v1)
    shared = sum(f.size for f in m1.all_files() if f.path != CHANGED)
    print(f"\ndedupe: {copies} B -> {after} B; {proc.stdout.strip()}")
    assert copies - after == shared and "MB freed" in proc.stdout
    for f in m1.all_files():
        assert sha256_file(v1 / f.path) == f.sha256
        assert os.path.samefile(v1 / f.path, blob_path(registry_dir, f.sha256))
        assert os.path.samefile(v0 / f.path, v1 / f.path) == (f.path != CHANGED)
