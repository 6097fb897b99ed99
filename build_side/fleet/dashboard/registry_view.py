"""The Registry page's data: the signed index, and for each release its manifest's variants.

A manifest that cannot be read is shown as a problem on its own line; one bad release never hides
the others (the page is for looking, the deploy path is where a bad manifest is refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from build_side.registry import read_index, read_registry_file
from edge_agent.bundle_check import parse_manifest
from edge_agent.contracts import IndexEntry, Variant
from edge_agent.errors import ContractError, RegistryError
from edge_agent.signing import TrustedKeys


@dataclass
class VariantRow:
    id: str
    precision: str
    device: str
    providers: list[str]
    size_bytes: int
    perplexity: float | None
    perplexity_ratio: float | None
    top1_agreement: float | None
    kl_divergence: float | None


@dataclass
class ReleaseRow:
    entry: IndexEntry
    variants: list[VariantRow] = field(default_factory=list)
    problem: str | None = None


@dataclass
class RegistryView:
    location: str
    releases: list[ReleaseRow]
    verified: bool
    key_id: str | None
    problem: str | None


def variant_row(v: Variant) -> VariantRow:
    ev = v.eval
    return VariantRow(
        id=v.id,
        precision=str(v.precision),
        device=v.device,
        providers=list(v.execution_providers),
        size_bytes=ev.size_bytes if ev else sum(f.size for f in v.files),
        perplexity=ev.perplexity if ev else None,
        perplexity_ratio=ev.perplexity_ratio if ev else None,
        top1_agreement=ev.top1_agreement if ev else None,
        kl_divergence=ev.kl_divergence if ev else None,
    )


def release_row(location: str, entry: IndexEntry) -> ReleaseRow:
    try:
        data = read_registry_file(location, entry.manifest_path)
        if data is None:
            return ReleaseRow(entry, problem=f"{entry.manifest_path} is missing")
        manifest = parse_manifest(data, entry.manifest_path)
    except (ContractError, RegistryError) as exc:
        return ReleaseRow(entry, problem=str(exc))
    return ReleaseRow(entry, [variant_row(v) for v in manifest.variants])


def registry_view(location: str, keys: Path | None) -> RegistryView:
    """Newest release of each name first. Raises RegistryError when the registry cannot be read."""
    trusted = TrustedKeys.from_paths([keys]) if keys and keys.is_dir() else None
    read = read_index(location, trusted)
    entries = sorted(read.index.bundles, key=lambda b: (b.name, -b.created.timestamp()))
    return RegistryView(
        location,
        [release_row(location, e) for e in entries],
        read.verified,
        read.key_id,
        read.problem,
    )


__all__ = ["RegistryView", "ReleaseRow", "VariantRow", "registry_view"]
