"""Write a bundle's manifest: list files with size and sha256, then sign the exact bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edge_agent.bundle_check import MANIFEST, SIGNATURE
from edge_agent.contracts import BundleManifest, FileEntry
from edge_agent.hashing import sha256_file
from edge_agent.signing import SigningKey, detached_signature


def file_entries(bundle_dir: Path, subdir: str) -> list[FileEntry]:
    """Every regular file under `bundle_dir/subdir`, as manifest entries with bundle-relative paths."""
    base = bundle_dir / subdir
    return [
        FileEntry(path=f.relative_to(bundle_dir).as_posix(), size=f.stat().st_size, sha256=sha256_file(f))
        for f in sorted(base.rglob("*"))
        if f.is_file() and not f.is_symlink()
    ]


def manifest_bytes(manifest: BundleManifest) -> bytes:
    return (
        json.dumps(manifest.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2).encode()
        + b"\n"
    )


def write_signed_manifest(bundle_dir: Path, manifest: BundleManifest, key: SigningKey) -> bytes:
    """Write manifest.json and manifest.sig (the signature covers these exact bytes)."""
    data = manifest_bytes(manifest)
    for name, content in ((MANIFEST, data), (SIGNATURE, detached_signature(key, data))):
        tmp = bundle_dir / f".{name}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, bundle_dir / name)
    return data
