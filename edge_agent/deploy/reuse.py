"""Stage the files of a new version that the device already holds, instead of downloading them.

The manifest names every file by size and sha256. Before DOWNLOADING fetches anything, each file
whose sha256 the device already holds (the blob pool: any installed version or a verified part of an
earlier download; then the installed versions' own files, for a filesystem without hardlinks) is
hashed again and, when it still matches, linked into the staging folder: a hardlink, or a copy where
the filesystem refuses one. A copy that no longer matches (a byte flipped on disk) is never linked:
the file is downloaded again, and a damaged blob leaves the pool. VERIFYING then checks every staged
file, linked or downloaded, alike.

Crash safety: each file is linked under a temporary name and renamed into place, so after kill -9 a
staged file is complete or absent, and the next start links or downloads only what is missing.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.contracts import FileEntry
from edge_agent.deploy.blobs import NO_LINK
from edge_agent.deploy.download import part_path
from edge_agent.deploy.store import Store
from edge_agent.errors import SlmopsError
from edge_agent.hashing import sha256_file

log = logging.getLogger(__name__)

LINK_SUFFIX = ".link"


@dataclass
class Staged:
    """What the device supplied itself for one staging folder."""

    reused_bytes: int = 0  # staged from the device's own files, by this run or one before it
    reused_files: int = 0
    copied_bytes: int = 0  # of those, copied because no hardlink could be made
    damaged: list[str] = field(default_factory=list)  # paths whose local copy failed its sha256


def link_or_copy(source: Path, dest: Path) -> bool:
    """Hardlink `source` as `dest`; copy it where the filesystem cannot. True when it copied."""
    try:
        os.link(source, dest)
        return False
    except OSError as exc:
        if exc.errno not in NO_LINK:
            raise
    with open(source, "rb") as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    return True


class LocalFiles:
    """The device's files as a source of staged files, by sha256."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _installed(self) -> dict[str, list[Path]]:
        """sha256 -> files the installed versions' manifests list with it."""
        found: dict[str, list[Path]] = {}
        for version in self.store.versions():
            try:
                entries = version.manifest().files_for(version.variant)
            except (OSError, SlmopsError, KeyError) as exc:
                log.warning("%s: manifest unreadable, its files are not reused (%s)", version.ref, exc)
                continue
            for e in entries:
                found.setdefault(e.sha256, []).append(version.path / e.path)
        return found

    def _source(
        self, entry: FileEntry, installed: dict[str, list[Path]], bad: set[tuple[int, int]], out: Staged
    ) -> Path | None:
        """A local file with the entry's size and sha256, checked now; None when the device has none."""
        pool = self.store.blobs
        for candidate in [pool.path(entry.sha256), *installed.get(entry.sha256, [])]:
            try:
                st = candidate.lstat()
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if not candidate.is_file() or candidate.is_symlink() or key in bad:
                continue
            if st.st_size != entry.size:
                if candidate == pool.path(entry.sha256):
                    pool.evict(entry.sha256, f"{st.st_size} bytes, not {entry.size}")
                continue
            if sha256_file(candidate) == entry.sha256:
                return candidate
            bad.add(key)
            out.damaged.append(entry.path)
            log.warning("%s: the copy at %s fails its sha256; downloading it again", entry.path, candidate)
            if pool.same_inode(candidate, entry.sha256):
                pool.evict(entry.sha256, f"{candidate} does not match its sha256")
        return None

    def stage(
        self, files: list[FileEntry], staging: Path, between: Callable[[], None] | None = None
    ) -> Staged:
        """Link every listed file the device holds into `staging`; `between` runs after each link."""
        out = Staged()
        installed: dict[str, list[Path]] | None = None
        bad: set[tuple[int, int]] = set()
        for entry in files:
            dest = staging / entry.path
            tmp = dest.with_name(dest.name + LINK_SUFFIX)
            tmp.unlink(missing_ok=True)  # a link cut short by a crash
            if dest.is_file() and dest.stat().st_size == entry.size:
                if self.store.blobs.same_inode(dest, entry.sha256):  # linked by a run before this one
                    out.reused_bytes += entry.size
                    out.reused_files += 1
                continue
            if installed is None:
                installed = self._installed()
            source = self._source(entry, installed, bad, out)
            if source is None:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            part_path(dest).unlink(missing_ok=True)  # a partial download of what we now hold whole
            copied = link_or_copy(source, tmp)
            os.replace(tmp, dest)
            out.reused_bytes += entry.size
            out.reused_files += 1
            out.copied_bytes += entry.size if copied else 0
            log.debug("%s: %s from %s", entry.path, "copied" if copied else "linked", source)
            if between:
                between()
        if out.reused_files:
            log.info(
                "%d of %d files (%d bytes) taken from the device's store, %d bytes of them copied",
                out.reused_files,
                len(files),
                out.reused_bytes,
                out.copied_bytes,
            )
        return out

    def adopt(self, file: Path, entry: FileEntry) -> None:
        """A file VERIFYING found good becomes reusable by its sha256. Only a saving: a pool that
        cannot take it (a full or read-only folder) costs a later download, not this install."""
        try:
            self.store.blobs.adopt(file, entry.sha256)
        except OSError as exc:
            log.warning("%s: not added to the blob pool (%s)", entry.path, exc)

    def forget(self, file: Path, entry: FileEntry) -> None:
        """A staged file VERIFYING found bad: if it came from the pool, the pool's copy is bad too."""
        if self.store.blobs.same_inode(file, entry.sha256):
            self.store.blobs.evict(entry.sha256, f"{entry.path} failed verification")


__all__ = ["LINK_SUFFIX", "LocalFiles", "Staged", "link_or_copy"]
