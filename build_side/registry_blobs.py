"""A registry stores each file's bytes once: `blobs/sha256/<hex>`, hardlinked into every version folder.

    blobs/sha256/<hex>               the bytes of every published file, once however many releases list it
    bundles/<name>/<version>/<path>  a hardlink to its blob: plain files, so any static server, object
                                     store sync or CDN serves the same plain URLs as before

A release that changes one small file adds that file to the registry's disk, not a second copy of the
weights. Where the filesystem refuses hardlinks the version folder gets a copy (correct, not shared).
A blob is checked against its name before it is linked into a new release, so a damaged blob is
replaced, never spread.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from edge_agent.contracts import FileEntry
from edge_agent.deploy.blobs import NO_LINK, usage
from edge_agent.hashing import sha256_file

log = logging.getLogger(__name__)

BLOBS = "blobs/sha256"
READ_ONLY = 0o444


def blob_path(root: Path, sha256: str) -> Path:
    return Path(root) / BLOBS / sha256


def _good(blob: Path, entry: FileEntry) -> bool:
    return blob.is_file() and blob.stat().st_size == entry.size and sha256_file(blob) == entry.sha256


def place(root: Path, entry: FileEntry, source: Path, dest: Path) -> bool:
    """Put `source` (verified against `entry`) at `dest` as a link to its blob, adding the blob when
    the registry lacks it. True when the bytes were already in the registry."""
    blob = blob_path(root, entry.sha256)
    held = _good(blob, entry)
    if not held:
        if blob.exists():
            log.warning("registry blob %s does not match its name; replacing it", entry.sha256[:12])
        blob.parent.mkdir(parents=True, exist_ok=True)
        tmp = blob.with_name(f".{blob.name}.tmp")
        shutil.copy2(source, tmp)
        os.chmod(tmp, READ_ONLY)  # shared by every release that lists it: never edited in place
        os.replace(tmp, blob)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(blob, dest)
    except OSError as exc:
        if exc.errno not in NO_LINK:
            raise
        shutil.copy2(blob, dest)
    return held


def _link(source: Path, dest: Path) -> bool:
    """Hardlink `source` over `dest` through a temporary name; False where links are refused."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError as exc:
        if exc.errno in NO_LINK:
            return False
        raise
    os.replace(tmp, dest)
    return True


def share(root: Path, files: list[tuple[FileEntry, Path]]) -> int:
    """Make each listed (published) file a name of its blob: for registries published before blobs
    existed, or copies made where links failed. Each swap is one rename over a file with the same
    bytes, so a reader sees no change. Returns the bytes freed (content no longer held twice)."""
    freed = 0
    for entry, path in files:
        blob = blob_path(root, entry.sha256)
        if blob.exists() and os.path.samefile(blob, path):
            continue
        if not _good(path, entry):
            log.warning("%s does not match its manifest; left as it is", path)
            continue
        blob.parent.mkdir(parents=True, exist_ok=True)
        if _good(blob, entry):
            alone = path.stat().st_nlink == 1
            if _link(blob, path) and alone:
                freed += entry.size
        elif not _link(path, blob):  # the file itself becomes the blob
            continue
        os.chmod(blob, READ_ONLY)
    return freed


def disk_bytes(root: Path) -> int:
    """Disk the bundles and blobs of a registry directory use, each inode once."""
    return usage([Path(root) / "bundles"], Path(root) / "blobs").disk_bytes


__all__ = ["BLOBS", "READ_ONLY", "blob_path", "disk_bytes", "place", "share"]
