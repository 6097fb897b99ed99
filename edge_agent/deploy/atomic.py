"""Crash-safe file primitives: a file or symlink is either the old one or the new one, never half.

Each write goes to a temporary name in the same folder, is flushed to disk, then renamed over the
target; the folder is flushed too, so the rename itself survives a power cut. A write that fails
leaves no temporary file behind; a full disk is raised as `DiskFullError`, after one more try when
a `Reserve` could be released for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edge_agent.deploy.reserve import Reserve, is_disk_full
from edge_agent.errors import DiskFullError


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_once(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes, reserve: Reserve | None = None) -> None:
    path = Path(path)
    try:
        _write_once(path, data)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        if reserve is None or not reserve.release():
            raise DiskFullError(f"{path}: no space left on the state disk ({exc.strerror})") from exc
        try:
            _write_once(path, data)
        except OSError as again:
            if is_disk_full(again):
                raise DiskFullError(f"{path}: no space left on the state disk ({again.strerror})") from again
            raise


def append_line(path: Path, line: str, reserve: Reserve | None = None) -> None:
    """Append one line; on a full disk the file is cut back to its old length (no half line)."""
    path = Path(path)
    data = (line + "\n").encode()
    for attempt in (1, 2):
        size = path.stat().st_size if path.exists() else 0
        try:
            with open(path, "ab") as fh:
                fh.write(data)
                fh.flush()
            return
        except OSError as exc:
            if path.exists():
                os.truncate(path, size)
            if not is_disk_full(exc):
                raise
            if attempt == 2 or reserve is None or not reserve.release():
                raise DiskFullError(f"{path}: no space left on the state disk ({exc.strerror})") from exc


def write_json(path: Path, obj: Any, reserve: Reserve | None = None) -> None:
    write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n", reserve)


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
