"""The versions installed on the device, and which one is active.

    state_dir/
      store/<name>@<version>/   manifest.json, manifest.sig, the chosen variant's files, .installed.json
      blobs/<sha256>            one more name for each verified file (`blobs.py`): versions share
                                identical files as hardlinks, so each content is on disk once
      staging/<name>@<version>-<sha12>/   a download in progress (files, `.part` files)
      trash/                    versions being deleted (moved here first, so store/ never holds half one)
      current -> store/...      the active version, switched with one atomic rename
      previous -> store/...     the version active before it, the rollback target

A folder appears in `store/` only by renaming a complete, verified staging folder that already holds
its `.installed.json`, so every folder in `store/` is a complete version. Removing a version removes
its names; a file another version (or the pool, until `collect` prunes it) still names stays.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edge_agent.bundle_check import MANIFEST, parse_manifest
from edge_agent.contracts import BundleManifest
from edge_agent.contracts.common import utcnow
from edge_agent.deploy import atomic
from edge_agent.deploy.blobs import BlobPool, Usage, usage

log = logging.getLogger(__name__)

INSTALL_INFO = ".installed.json"


@dataclass
class Installed:
    """One complete version in the store."""

    ref: str
    path: Path
    variant: str
    manifest_sha256: str
    installed: datetime
    provider: str | None = None

    @property
    def variant_dir(self) -> Path:
        return self.path / self.variant

    def manifest(self) -> BundleManifest:
        return parse_manifest((self.path / MANIFEST).read_bytes(), self.path / MANIFEST)

    def as_dict(self) -> dict:
        return {
            "ref": self.ref,
            "variant": self.variant,
            "provider": self.provider,
            "manifest_sha256": self.manifest_sha256,
            "installed": self.installed.isoformat(),
            "path": str(self.path),
        }


class Store:
    def __init__(self, state_dir: Path, create: bool = True) -> None:
        self.root = Path(state_dir)
        self.store_dir = self.root / "store"
        self.staging_root = self.root / "staging"
        self.trash_dir = self.root / "trash"
        self.current_link = self.root / "current"
        self.previous_link = self.root / "previous"
        self.blobs = BlobPool(self.root / "blobs")
        if create:  # `edge-agent status` opens it read-only
            for d in (self.root, self.store_dir, self.staging_root, self.trash_dir):
                d.mkdir(parents=True, exist_ok=True)

    # -- reading -------------------------------------------------------------------------------

    def _read(self, path: Path) -> Installed | None:
        info_path = path / INSTALL_INFO
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            return None
        return Installed(
            ref=info["ref"],
            path=path,
            variant=info["variant"],
            manifest_sha256=info["manifest_sha256"],
            installed=datetime.fromisoformat(info["installed"]),
            provider=info.get("provider"),
        )

    def get(self, ref: str) -> Installed | None:
        return self._read(self.store_dir / ref)

    def _link(self, link: Path) -> Installed | None:
        if not link.is_symlink():
            return None
        return self._read(link.resolve())

    def current(self) -> Installed | None:
        return self._link(self.current_link)

    def previous(self) -> Installed | None:
        return self._link(self.previous_link)

    def versions(self) -> list[Installed]:
        """Every complete version, oldest install first."""
        if not self.store_dir.is_dir():
            return []
        found = [v for p in sorted(self.store_dir.iterdir()) if (v := self._read(p))]
        return sorted(found, key=lambda v: v.installed)

    def is_installed(self, ref: str, manifest_sha256: str) -> bool:
        v = self.get(ref)
        return v is not None and v.manifest_sha256 == manifest_sha256

    # -- staging and install -------------------------------------------------------------------

    def staging_dir(self, ref: str, manifest_sha256: str) -> Path:
        return self.staging_root / f"{ref}-{manifest_sha256[:12]}"

    def install(self, staging: Path, ref: str, variant: str, manifest_sha256: str) -> Installed:
        """Mark the verified staging folder complete, then rename it into the store (idempotent)."""
        existing = self.get(ref)
        if existing and existing.manifest_sha256 == manifest_sha256 and not staging.exists():
            return existing  # a restart after the rename: already done
        info = {"ref": ref, "variant": variant, "manifest_sha256": manifest_sha256}
        info["installed"] = utcnow().isoformat()
        atomic.write_json(staging / INSTALL_INFO, info)
        target = self.store_dir / ref
        if target.exists():
            self._trash(target)
        os.rename(staging, target)
        atomic.fsync_dir(self.store_dir)
        installed = self.get(ref)
        assert installed is not None
        return installed

    def set_provider(self, ref: str, provider: str) -> None:
        """Remember which execution provider passed the health check for this version."""
        path = self.store_dir / ref / INSTALL_INFO
        info = json.loads(path.read_text())
        if info.get("provider") != provider:
            info["provider"] = provider
            atomic.write_json(path, info)

    def discard_staging(self, staging: Path) -> None:
        if staging.exists():
            self._trash(staging)
            self.empty_trash()

    # -- switching -----------------------------------------------------------------------------

    def activate(self, ref: str) -> None:
        """`previous` := the active version, then `current` := ref. Each step is one atomic rename."""
        target = self.store_dir / ref
        if self.get(ref) is None:
            raise FileNotFoundError(f"{ref} is not a complete version in {self.store_dir}")
        active = self.current()
        if active and active.ref != ref:
            atomic.point_symlink(self.previous_link, active.path)
        atomic.point_symlink(self.current_link, target)

    def restore(self, ref: str | None) -> None:
        """Point `current` back at ref (or at nothing, when there was no version before)."""
        if ref is None:
            atomic.point_symlink(self.current_link, None)
            return
        if self.get(ref) is None:
            raise FileNotFoundError(f"{ref} is not a complete version in {self.store_dir}")
        atomic.point_symlink(self.current_link, self.store_dir / ref)

    # -- cleaning ------------------------------------------------------------------------------

    def _trash(self, path: Path) -> None:
        os.rename(path, self.trash_dir / f"{path.name}.{uuid.uuid4().hex[:8]}")

    def remove(self, ref: str) -> None:
        """Delete one version that is neither current nor previous (a failed install)."""
        path = self.store_dir / ref
        if path.exists():
            self._trash(path)
            self.empty_trash()

    def empty_trash(self) -> None:
        for p in self.trash_dir.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def collect(self, keep: int, protect: set[str] | None = None) -> list[str]:
        """Delete all but `current`, `previous` and the `keep` newest others; returns removed refs."""
        active, prev = self.current(), self.previous()
        pinned = {v.ref for v in (active, prev) if v} | (protect or set())
        others = [v for v in reversed(self.versions()) if v.ref not in pinned]
        budget = max(0, keep - (1 if prev else 0))
        removed = []
        for v in others[budget:]:
            self._trash(v.path)
            removed.append(v.ref)
        self.empty_trash()
        freed = self.blobs.prune()
        if freed:
            log.info("freed %d bytes of files no version uses", freed)
        return removed

    def recover(self) -> list[str]:
        """After a crash: drop half-deleted folders and stray temp links, repair a broken `current`."""
        notes = []
        self.empty_trash()
        for stray in (self.root / ".current.tmp", self.root / ".previous.tmp"):
            if stray.is_symlink() or stray.exists():
                stray.unlink()
                notes.append(f"removed {stray.name}")
        for d in self.store_dir.iterdir():
            if d.name.startswith(".") or self._read(d) is None:
                self._trash(d)
                notes.append(f"removed incomplete {d.name}")
        self.empty_trash()
        if self.current_link.is_symlink() and self.current() is None:
            prev = self.previous()
            self.restore(prev.ref if prev else None)
            notes.append(f"current pointed at no complete version; now {prev.ref if prev else 'none'}")
        if self.previous_link.is_symlink() and self.previous() is None:
            atomic.point_symlink(self.previous_link, None)
        for note in notes:
            log.warning("store recovery: %s", note)
        return notes

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def usage(self) -> Usage:
        """Disk the versions, the blob pool and staging use, each shared file counted once."""
        return usage([self.store_dir, self.staging_root], self.blobs.root)


__all__ = ["INSTALL_INFO", "Installed", "Store"]
