"""What the registry holds, seen by the operator: a bundle reference (URL + manifest sha256) or a refusal.

A deployment may only point at a bundle the registry really holds, so the manifest's bytes are read
(from a directory or over HTTP), parsed, matched against the name@version asked for and hashed; the
signed index, when present, must agree. The URL in the desired state is relative to the registry, so
the same document works for every device whatever address it reaches the registry by.
"""

from __future__ import annotations

import re

from build_side.fleet.errors import BundleNotFoundError
from build_side.registry import is_url, read_registry_file
from edge_agent.bundle_check import parse_manifest
from edge_agent.contracts import BundleRef
from edge_agent.contracts.common import NAME_RE, SEMVER_RE
from edge_agent.errors import ContractError, RegistryError
from edge_agent.hashing import sha256_bytes


def parse_ref(text: str) -> tuple[str, str]:
    """`name@version` -> (name, version), with a clear message for anything else."""
    name, sep, version = text.partition("@")
    if not sep or not re.match(NAME_RE, name) or not re.match(SEMVER_RE, version):
        raise BundleNotFoundError(f"{text!r}: expected NAME@VERSION, e.g. smollm2-135m-instruct@1.0.0")
    return name, version


def manifest_path(name: str, version: str) -> str:
    return f"bundles/{name}/{version}/manifest.json"


def resolve_bundle(location: str, ref: str) -> BundleRef:
    """The reference a desired state carries for `name@version`; refuses what the registry lacks.

    The signed index says where the manifest is and what it hashes to; a registry without an index
    (hand-made, or a plain folder) is read at the standard path. Either way the manifest's bytes are
    fetched and hashed here: the digest a device checks is the digest of what is really there.
    """
    from build_side.registry import read_index

    name, version = parse_ref(ref)
    index = read_index(location).index
    entry = next((e for e in index.bundles if (e.name, e.version) == (name, version)), None)
    rel = entry.manifest_path if entry else manifest_path(name, version)
    data = read_registry_file(location, rel)
    if data is None:
        held = sorted((e.ref for e in index.bundles if e.name == name), key=str)
        hint = f" (it holds {', '.join(held)})" if held else ""
        raise BundleNotFoundError(f"the registry {location} does not hold {name}@{version}{hint}")
    try:
        manifest = parse_manifest(data, f"{location}/{rel}")
    except ContractError as exc:
        raise RegistryError(str(exc)) from exc
    if (manifest.name, manifest.version) != (name, version):
        raise RegistryError(f"{location}/{rel} describes {manifest.name}@{manifest.version}, not {ref}")
    digest = sha256_bytes(data)
    if entry and entry.manifest_sha256 != digest:
        raise RegistryError(
            f"{location}/index.json lists {ref} with manifest sha256 {entry.manifest_sha256[:12]}..., "
            f"but the manifest's bytes hash to {digest[:12]}..."
        )
    return BundleRef(name=name, version=version, manifest_url=rel, manifest_sha256=digest)


__all__ = ["is_url", "manifest_path", "parse_ref", "read_registry_file", "resolve_bundle"]
