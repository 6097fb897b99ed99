"""The device's files by content: one hardlink per verified sha256, so versions share what is equal.

    state_dir/blobs/<sha256>     a hardlink to a file some version, staging folder or earlier
                                 download holds and that was verified against that sha256

The pool holds no bytes of its own while a version uses a file: it is one more name for the same
inode. A blob whose only name is the pool's (`st_nlink == 1`) is what no version uses any more, a
verified part of a download that did not finish; `prune()` frees those. Where the filesystem refuses
hardlinks the pool stays empty and reuse falls back to the installed versions' own files (copied).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# link() failures that mean "this filesystem or this pair of folders cannot share an inode"
NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}
TMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class Usage:
    """Disk a store uses, each inode counted once (what `du -b` says), beside its logical size."""

    disk_bytes: int
    logical_bytes: int  # every file of every version counted, as if none were shared


def usage(roots: list[Path], pool: Path) -> Usage:
    """Over `roots` and the pool; the pool's names add no logical bytes (they are second names)."""
    seen: set[tuple[int, int]] = set()
    disk = logical = 0
    for root in [*roots, pool]:
        if not root.is_dir():
            continue
        for dirpath, _, names in os.walk(root):
            for name in names:
                st = os.lstat(os.path.join(dirpath, name))
                if not stat.S_ISREG(st.st_mode):
                    continue
                if root != pool:
                    logical += st.st_size
                key = (st.st_dev, st.st_ino)
                if key not in seen:
                    seen.add(key)
                    disk += st.st_size
    return Usage(disk, logical)


class BlobPool:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def adopt(self, file: Path, sha256: str) -> bool:
        """Give a verified file its content name (a hardlink); False where it cannot be linked."""
        blob = self.path(sha256)
        if blob.is_file():
            return True
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = blob.with_name(blob.name + TMP_SUFFIX)
        tmp.unlink(missing_ok=True)
        try:
            os.link(file, tmp)
        except OSError as exc:
            if exc.errno in NO_LINK:
                log.debug("%s: no hardlink into the blob pool (%s); not pooled", file, exc.strerror)
                return False
            raise
        os.replace(tmp, blob)
        return True

    def evict(self, sha256: str, reason: str) -> None:
        """Drop a blob found not to match its name (damaged on disk); versions keep their names."""
        blob = self.path(sha256)
        if blob.exists():
            log.warning("blob %s dropped from the pool: %s", sha256[:12], reason)
            blob.unlink()

    def same_inode(self, file: Path, sha256: str) -> bool:
        try:
            return os.path.samefile(file, self.path(sha256))
        except OSError:
            return False

    def prune(self) -> int:
        """Delete blobs nothing else names (and stray temp links); returns the bytes freed."""
        if not self.root.is_dir():
            return 0
        freed = 0
        for blob in self.root.iterdir():
            st = blob.lstat()
            if blob.name.endswith(TMP_SUFFIX) or st.st_nlink <= 1:
                blob.unlink()
                freed += st.st_size if st.st_nlink <= 1 else 0
        return freed


__all__ = ["NO_LINK", "BlobPool", "Usage", "usage"]
