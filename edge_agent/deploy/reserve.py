"""Space set aside on the state disk, so a full disk still lets the agent record how things ended.

`state_dir/reserve` is a file of `limits.state_reserve_kb` bytes. A state write (journal, ledger,
reported state, events) that meets ENOSPC deletes it and tries once more: the write lands, the
deployment ends FAILED DISK_FULL with its event, and nothing dies. The file is made again once the
disk has room (`ensure`, after every deployment and at start-up).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

RESERVE_FILE = "reserve"


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Reserve:
    def __init__(self, state_dir: Path, size_bytes: int) -> None:
        self.path = Path(state_dir) / RESERVE_FILE
        self.size = size_bytes

    def ensure(self) -> bool:
        """Make the reserve when it is missing and the disk has room for it and as much again."""
        if self.size <= 0 or (self.path.is_file() and self.path.stat().st_size == self.size):
            return True
        try:
            st = os.statvfs(self.path.parent)
            if st.f_bavail * st.f_frsize < 2 * self.size:
                return False
            with open(self.path, "wb") as fh:
                fh.write(b"\0" * self.size)  # real blocks: a sparse file would reserve nothing
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            if not is_disk_full(exc):
                raise
            return False
        return True

    def release(self) -> bool:
        """Free the reserve for a state write that met a full disk; False when there was none left."""
        if not self.path.exists():
            return False
        self.path.unlink()
        log.warning("the disk is full: released the %d KB state reserve", self.size // 1024)
        return True


__all__ = ["RESERVE_FILE", "Reserve", "is_disk_full"]
