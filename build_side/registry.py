"""A registry is a directory of static files (DESIGN.md section 4); this module writes and reads it.

    index.json, index.sig              what the registry holds, signed
    bundles/<name>/<version>/...       immutable once published; each file a hardlink to its blob
    blobs/sha256/<hex>                 each file's bytes once, however many releases list it
                                       (`registry_blobs.py`)
    channels/<channel>.json            desired state for devices that poll (written by the fleet tools)
    keys/<key-id>.pub                  the public keys that signed manifests and the index

Publishing copies a verified bundle under a temporary name inside `bundles/<name>/` and renames it
into place, so a reader sees all of it or nothing; `index.json` is then rebuilt from what is on disk
and replaced the same way. One lock file serialises publishers on the same registry. A file whose
bytes the registry already holds is linked, not copied: a release that changes one small file adds
that file, and the index says so per release (`stored_bytes` beside `size_bytes`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import ValidationError

from build_side.bundle import staging_dir
from build_side.registry_blobs import place, share
from edge_agent.bundle_check import MANIFEST, SIGNATURE, describe_validation_error, verify_bundle
from edge_agent.contracts import IndexEntry, RegistryIndex
from edge_agent.errors import BundleError, PublishConflictError, RegistryError, SignatureError
from edge_agent.signing import SigningKey, TrustedKeys, VerifyKey, detached_signature, verify_detached

INDEX, INDEX_SIG, LOCK = "index.json", "index.sig", ".publish.lock"


@dataclass(frozen=True)
class PublishResult:
    ref: str
    path: Path
    manifest_sha256: str
    published: bool  # False: the same content was already there (nothing done)


def bundle_path(root: Path, name: str, version: str) -> Path:
    return Path(root) / "bundles" / name / version


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _trusted_for_publish(root: Path, key: SigningKey) -> TrustedKeys:
    """A bundle may be signed by the publishing key or by a key the registry already lists."""
    return TrustedKeys([key.public, *(VerifyKey.load(p) for p in sorted(root.glob("keys/*.pub")))])


def _save_public(root: Path, key_id: str, trusted: TrustedKeys) -> None:
    path = root / "keys" / f"{key_id}.pub"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        trusted.get(key_id).save(path)


def publish(bundle_dir: Path, root: Path, key: SigningKey) -> PublishResult:
    """Put a bundle into the registry at `root` and re-sign the index.

    The bundle is verified first (signature and every file). Publishing the same name@version again
    with identical manifest bytes is a no-op; with different bytes it is refused."""
    bundle_dir, root = Path(bundle_dir), Path(root)
    trusted = _trusted_for_publish(root, key)
    report = verify_bundle(bundle_dir, trusted)
    if not report.ok:
        problems = "; ".join(str(p) for p in report.problems)
        raise BundleError(bundle_dir, f"does not match its manifest, not publishing: {problems}")
    m = report.manifest
    data = (bundle_dir / MANIFEST).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    target = bundle_path(root, m.name, m.version)
    with _locked(root):
        if target.exists():
            existing = (target / MANIFEST).read_bytes() if (target / MANIFEST).is_file() else b""
            if hashlib.sha256(existing).hexdigest() != digest:
                raise PublishConflictError(
                    f"{m.ref} is already published in {root} with different content; "
                    "a published version never changes: bump the version"
                )
            write_index(root, key)
            return PublishResult(m.ref, target, digest, published=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_dir(target.parent, f".{m.version}-")
        try:
            for entry in {f.path: f for f in m.all_files()}.values():
                place(root, entry, bundle_dir / entry.path, staging / entry.path)
            for rel in (MANIFEST, SIGNATURE):
                shutil.copy2(bundle_dir / rel, staging / rel)
            os.rename(staging, target)  # atomic; fails if another publisher won the race
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if target.exists():
                raise PublishConflictError(f"{m.ref} appeared in {root} while publishing") from exc
            raise RegistryError(f"cannot write {target}: {exc}") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _save_public(root, report.key_id, trusted)
        write_index(root, key)
    return PublishResult(m.ref, target, digest, published=True)


def dedupe(root: Path) -> int:
    """Store each file's content once in a registry published before blobs (or with copies): every
    published file becomes a name of its blob. Returns the bytes freed. Safe while readers read."""
    from edge_agent.bundle_check import parse_manifest

    root = Path(root)
    with _locked(root):
        files = []
        for mpath in sorted(root.glob(f"bundles/*/*/{MANIFEST}")):
            if mpath.parent.name.startswith("."):
                continue
            m = parse_manifest(mpath.read_bytes(), mpath)
            files += [(f, mpath.parent / f.path) for f in m.all_files() if (mpath.parent / f.path).is_file()]
        return share(root, files)


def scan(root: Path) -> list[IndexEntry]:
    """Index entries for every complete bundle under `root/bundles` (half-copied ones are hidden
    under dot-names, so they never show). `stored_bytes` counts, in order of creation, the bytes of
    a release's files whose content no earlier release holds."""
    from edge_agent.bundle_check import parse_manifest

    found = []
    for mpath in sorted(Path(root).glob(f"bundles/*/*/{MANIFEST}")):
        if mpath.parent.name.startswith("."):
            continue
        data = mpath.read_bytes()
        m = parse_manifest(data, mpath)
        try:
            key_id = json.loads((mpath.parent / SIGNATURE).read_bytes())["key_id"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"{mpath.parent / SIGNATURE}: unreadable signature ({exc})") from exc
        found.append((m, mpath, hashlib.sha256(data).hexdigest(), key_id))
    seen: set[str] = set()
    stored: dict[str, int] = {}
    for m, *_ in sorted(found, key=lambda f: (f[0].created, f[0].name, f[0].version)):
        new = {f.sha256: f.size for f in m.all_files() if f.sha256 not in seen}
        seen.update(new)
        stored[m.ref] = sum(new.values())
    return [
        IndexEntry(
            name=m.name,
            version=m.version,
            manifest_path=mpath.relative_to(root).as_posix(),
            manifest_sha256=digest,
            created=m.created,
            description=m.description,
            task=m.task,
            variants=[v.id for v in m.variants],
            size_bytes=sum(f.size for f in m.all_files()),
            stored_bytes=stored[m.ref],
            key_id=key_id,
        )
        for m, mpath, digest, key_id in found
    ]


def index_bytes(index: RegistryIndex) -> bytes:
    return json.dumps(index.model_dump(mode="json", by_alias=True), indent=2).encode() + b"\n"


def write_index(root: Path, key: SigningKey) -> RegistryIndex:
    """Rebuild `index.json` from the bundles on disk and sign it (`index.sig`); publish the key.
    An index that already lists exactly these bundles, signed by this key, is left as it is."""
    root = Path(root)
    bundles = scan(root)
    current = _current_index(root)
    if current is not None and current[0].bundles == bundles and current[1] == key.key_id:
        return current[0]
    index = RegistryIndex(bundles=bundles)
    data = index_bytes(index)
    _atomic_write(root / INDEX, data)
    _atomic_write(root / INDEX_SIG, detached_signature(key, data))
    pub = root / "keys" / f"{key.key_id}.pub"
    if not pub.exists():
        pub.parent.mkdir(parents=True, exist_ok=True)
        key.public.save(pub)
    return index


def _current_index(root: Path) -> tuple[RegistryIndex, str] | None:
    try:
        index = RegistryIndex.model_validate_json((root / INDEX).read_bytes())
        key_id = json.loads((root / INDEX_SIG).read_bytes())["key_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return index, key_id


@dataclass(frozen=True)
class IndexRead:
    index: RegistryIndex
    key_id: str | None
    verified: bool
    problem: str | None  # why the signature was not verified


def is_url(location: str | Path) -> bool:
    return str(location).startswith(("http://", "https://"))


def read_registry_file(location: str | Path, rel: str) -> bytes | None:
    """Bytes of one registry file from a directory or URL, or None when the registry lacks it."""
    location = str(location)
    if is_url(location):
        url = location.rstrip("/") + "/" + rel
        try:
            resp = httpx.get(url, timeout=30, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise RegistryError(f"cannot reach {url}: {exc}") from exc
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise RegistryError(f"{url}: HTTP {resp.status_code}")
        return resp.content
    if not Path(location).is_dir():
        raise RegistryError(f"{location}: no such registry directory")
    path = Path(location) / rel
    return path.read_bytes() if path.is_file() else None


def read_index(location: str | Path, trusted: TrustedKeys | None = None) -> IndexRead:
    """Read `index.json` from a registry directory or URL and check `index.sig` against `trusted`.

    An unsigned or untrusted index is still returned (listing is informational); `verified` and
    `problem` say what held. A registry with no index yet reads as empty."""
    location = str(location)
    data = read_registry_file(location, INDEX)
    if data is None:
        return IndexRead(RegistryIndex(), None, False, "the registry has no index.json yet")
    try:
        index = RegistryIndex.model_validate_json(data)
    except ValidationError as exc:
        raise RegistryError(f"{location}/{INDEX}: {describe_validation_error(exc)}") from exc
    sig = read_registry_file(location, INDEX_SIG)
    key_id = json.loads(sig).get("key_id") if sig else None
    if sig is None:
        return IndexRead(index, None, False, "index.sig is missing")
    if trusted is None or not len(trusted):
        return IndexRead(index, key_id, False, "no trusted keys given")
    try:
        verify_detached(data, sig, trusted, sig_name=INDEX_SIG)
    except SignatureError as exc:
        return IndexRead(index, key_id, False, str(exc))
    return IndexRead(index, key_id, True, None)


__all__ = [
    "INDEX",
    "INDEX_SIG",
    "IndexRead",
    "PublishResult",
    "bundle_path",
    "dedupe",
    "index_bytes",
    "publish",
    "read_index",
    "scan",
    "write_index",
]
