"""What the registry holds, seen by the operator: a bundle reference (URL + manifest sha256) or a refusal.

A deployment may only point at a bundle the registry really holds, so the manifest's bytes are read
(from a directory or over HTTP), parsed, matched against the name@version asked for and hashed; the
signed index, when present, must agree. The URL in the desired state is relative to the registry, so
the same document works for every device whatever address it reaches the registry by.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from build_side.fleet.errors import BundleNotFoundError, RegistryError
from edge_agent.bundle_check import parse_manifest
from edge_agent.contracts import BundleRef
from edge_agent.contracts.common import NAME_RE, SEMVER_RE
from edge_agent.errors import ContractError
from edge_agent.hashing import sha256_bytes


def parse_ref(text: str) -> tuple[str, str]:
    """`name@version` -> (name, version), with a clear message for anything else."""
    name, sep, version = text.partition("@")
    if not sep or not re.match(NAME_RE, name) or not re.match(SEMVER_RE, version):
        raise BundleNotFoundError(f"{text!r}: expected NAME@VERSION, e.g. smollm2-135m-instruct@1.0.0")
    return name, version


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def manifest_path(name: str, version: str) -> str:
    return f"bundles/{name}/{version}/manifest.json"


def read_registry_file(location: str, rel: str) -> bytes | None:
    """Bytes of one registry file, or None when the registry does not have it."""
    if is_url(location):
        url = location.rstrip("/") + "/" + rel
        try:
            resp = httpx.get(url, timeout=30, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise RegistryError(f"cannot reach the registry at {location} ({exc})") from exc
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise RegistryError(f"{url}: HTTP {resp.status_code}")
        return resp.content
    root = Path(location)
    if not root.is_dir():
        raise RegistryError(f"registry directory {root} does not exist")
    path = root / rel
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"{path}: {exc}") from exc


def index_entries(location: str) -> list[dict[str, Any]]:
    """The entries of index.json (one per name@version), in whichever nesting the index uses."""
    data = read_registry_file(location, "index.json")
    if data is None:
        return []
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{location}/index.json is not valid JSON ({exc})") from exc
    return list(_walk_entries(doc))


def _walk_entries(node: Any, name: str | None = None) -> Any:
    """Yield dicts carrying a version (and a name, from the entry or an enclosing key)."""
    if isinstance(node, list):
        for item in node:
            yield from _walk_entries(item, name)
    elif isinstance(node, dict):
        if "version" in node and isinstance(node["version"], str) and (node.get("name") or name):
            yield {**node, "name": node.get("name") or name}
            return
        for key, value in node.items():
            if isinstance(value, dict | list):
                child_name = key if re.match(NAME_RE, key) and key not in ("bundles", "versions") else name
                if isinstance(value, dict) and re.match(SEMVER_RE, key):
                    yield {**value, "name": value.get("name") or name, "version": key}
                    continue
                yield from _walk_entries(value, node.get("name", child_name))


def resolve_bundle(location: str, ref: str) -> BundleRef:
    """The reference a desired state carries for `name@version`; refuses what the registry lacks."""
    name, version = parse_ref(ref)
    rel = manifest_path(name, version)
    data = read_registry_file(location, rel)
    if data is None:
        held = sorted({f"{e['name']}@{e['version']}" for e in index_entries(location) if e["name"] == name})
        hint = f" (it holds {', '.join(held)})" if held else ""
        raise BundleNotFoundError(f"the registry {location} does not hold {name}@{version}{hint}")
    try:
        manifest = parse_manifest(data, f"{location}/{rel}")
    except ContractError as exc:
        raise RegistryError(str(exc)) from exc
    if (manifest.name, manifest.version) != (name, version):
        raise RegistryError(f"{location}/{rel} describes {manifest.name}@{manifest.version}, not {ref}")
    digest = sha256_bytes(data)
    for entry in index_entries(location):
        listed = entry.get("manifest_sha256")
        if (entry["name"], entry["version"]) == (name, version) and listed and listed != digest:
            raise RegistryError(
                f"{location}/index.json lists {ref} with manifest sha256 {listed[:12]}..., "
                f"but the manifest's bytes hash to {digest[:12]}..."
            )
    return BundleRef(name=name, version=version, manifest_url=rel, manifest_sha256=digest)


__all__ = ["index_entries", "is_url", "manifest_path", "parse_ref", "read_registry_file", "resolve_bundle"]
