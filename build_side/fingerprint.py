"""Content fingerprints for skipping work: files, folders and settings, hashed cheaply the second time.

File hashes are remembered by (path, size, mtime), so re-checking a 500 MB folder that did not change
costs a few `stat` calls. What goes into a fingerprint is what decides whether a stage runs again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from build_side.settings import cache_dir
from build_side.sources import _HashMemo


def _memo() -> _HashMemo:
    return _HashMemo(cache_dir() / "hash-memo.json")


def file_digest(path: Path) -> str:
    return _memo().sha256(Path(path))


def dir_digest(folder: Path) -> str:
    """sha256 over (relative path, content sha256) of every regular file, in path order."""
    folder = Path(folder)
    memo = _memo()
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        h.update(f"{f.relative_to(folder).as_posix()}\0{memo.sha256(f)}\n".encode())
    return h.hexdigest()


def path_digest(path: Path) -> str:
    path = Path(path)
    return dir_digest(path) if path.is_dir() else file_digest(path)


def settings_digest(settings: Any) -> str:
    """sha256 of the canonical JSON of `settings` (sorted keys; paths as strings)."""
    data = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()


__all__ = ["dir_digest", "file_digest", "path_digest", "settings_digest"]
