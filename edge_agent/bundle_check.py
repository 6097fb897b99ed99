"""Check a bundle directory against its signed manifest: signature, safe paths, sizes, sha256.

The order matters: the signature is checked on the raw bytes before the manifest is trusted enough to
be parsed, and files are checked only against a manifest whose signature held.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from edge_agent.contracts import BundleManifest, FileEntry
from edge_agent.errors import (
    BundleError,
    ChecksumMismatchError,
    ContractError,
    MissingFileError,
    SignatureError,
    SizeMismatchError,
)
from edge_agent.hashing import sha256_file
from edge_agent.signing import TrustedKeys, VerifyKey, verify_detached

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field path: `variants.0.files.1.path: ...`."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(document)"
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


def parse_manifest(data: bytes, where: str | Path = MANIFEST) -> BundleManifest:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(where, f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ContractError(where, "a manifest must be a JSON object")
    try:
        return BundleManifest.model_validate(doc)
    except ValidationError as exc:
        raise ContractError(where, describe_validation_error(exc)) from exc


def verify_manifest_bytes(
    data: bytes, sig: bytes | None, trusted: TrustedKeys, where: str | Path = MANIFEST
) -> tuple[BundleManifest, VerifyKey]:
    if sig is None:
        raise SignatureError(f"{where}: no detached signature ({SIGNATURE}) beside the manifest")
    key = verify_detached(data, sig, trusted, sig_name=str(Path(where).with_name(SIGNATURE)))
    return parse_manifest(data, where), key


def check_file(bundle_dir: Path, entry: FileEntry) -> None:
    """Raise the first problem of one listed file: escapes, symlink, missing, size, sha256."""
    root = bundle_dir.resolve()
    path = bundle_dir / entry.path
    # Walk each component: a symlink anywhere on the way is refused, not followed.
    probe = bundle_dir
    for part in Path(entry.path).parts:
        probe = probe / part
        if probe.is_symlink():
            raise BundleError(entry.path, "is a symlink; bundles may hold only regular files")
    if not path.resolve().is_relative_to(root):
        raise BundleError(entry.path, "resolves outside the bundle")
    if not path.is_file():
        raise MissingFileError(entry.path, "listed in the manifest but missing from the bundle")
    size = path.stat().st_size
    if size != entry.size:
        raise SizeMismatchError(entry.path, f"size is {size} bytes, the manifest says {entry.size}")
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise ChecksumMismatchError(entry.path, f"sha256 is {digest}, the manifest says {entry.sha256}")


@dataclass
class BundleReport:
    manifest: BundleManifest
    key_id: str
    files_checked: int = 0
    bytes_checked: int = 0
    problems: list[BundleError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_bundle(bundle_dir: Path, trusted: TrustedKeys, check_files: bool = True) -> BundleReport:
    """Signature first (raises), then every file (collected, so one run names every problem)."""
    bundle_dir = Path(bundle_dir)
    mpath = bundle_dir / MANIFEST
    if not mpath.is_file():
        raise MissingFileError(mpath, "no manifest.json: not a bundle directory")
    spath = bundle_dir / SIGNATURE
    sig = spath.read_bytes() if spath.is_file() else None
    manifest, key = verify_manifest_bytes(mpath.read_bytes(), sig, trusted, mpath)
    report = BundleReport(manifest, key.key_id)
    if check_files:
        for entry in manifest.all_files():
            try:
                check_file(bundle_dir, entry)
            except BundleError as exc:
                report.problems.append(exc)
            else:
                report.files_checked += 1
                report.bytes_checked += entry.size
    return report


__all__ = [
    "MANIFEST",
    "SIGNATURE",
    "BundleReport",
    "check_file",
    "describe_validation_error",
    "parse_manifest",
    "verify_bundle",
    "verify_manifest_bytes",
]
