"""Crash-safe file primitives: a file or symlink is either the old one or the new one, never half.

Each write goes to a temporary name in the same folder, is flushed to disk, then renamed over the
target; the folder is flushed too, so the rename itself survives a power cut.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n")


def point_symlink(link: Path, target: Path | None) -> None:
    """Make `link` point at `target` (relative), or remove it when target is None, atomically."""
    link = Path(link)
    if target is None:
        link.unlink(missing_ok=True)
        fsync_dir(link.parent)
        return
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)
