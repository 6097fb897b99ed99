"""The demo's release: SmolLM2-135M-Instruct's cpu variants, built, signed and published once.

A registry never holds two different manifests for one name@version, so a release already in the
registry is reused as it is: the second run of the demo builds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from build_side.fleet.catalog import manifest_path
from edge_agent.signing import SigningKey

NAME = "smollm2-135m-instruct"
VERSION = "1.0.0"
DEFAULT_VARIANTS = ("cpu-int4", "cpu-int8", "cpu-fp32")


@dataclass(frozen=True)
class Release:
    ref: str
    path: Path
    variants: list[str]
    built: bool  # False: reused from the registry


Progress = Callable[[str, int, int], None]  # (variant, completed, total)


def held(registry: Path, name: str = NAME, version: str = VERSION) -> bool:
    return (registry / manifest_path(name, version)).is_file()


def ensure_release(
    registry: Path,
    key: SigningKey,
    hf_dir: Path,
    source_info: dict,
    work: Path,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    progress: Progress | None = None,
) -> Release:
    """Convert, bundle, sign and publish the demo release, unless the registry holds it already."""
    from edge_agent.bundle_check import parse_manifest

    target = registry / manifest_path(NAME, VERSION)
    if target.is_file():
        manifest = parse_manifest(target.read_bytes(), target)
        return Release(manifest.ref, target.parent, [v.id for v in manifest.variants], built=False)

    from build_side.bundle import BundleSettings, assemble
    from build_side.convert import VariantSpec, convert
    from build_side.registry import publish
    from edge_agent.contracts import SourceInfo

    def on_progress(p) -> None:  # type: ignore[no-untyped-def]
        if progress:
            progress(p.variant, p.completed, p.total)

    convert_dir = work / "convert"
    convert(
        hf_dir,
        [VariantSpec(id=v) for v in variants],
        convert_dir,
        SourceInfo(**source_info),
        progress=on_progress,
    )
    bundle = assemble(
        convert_dir,
        work / "bundles",
        BundleSettings(
            name=NAME,
            version=VERSION,
            description="SmolLM2-135M-Instruct, cpu variants, built by `slmops demo`",
            variants=list(variants),
        ),
        key,
    )
    result = publish(bundle.path, registry, key)
    return Release(result.ref, result.path, list(variants), built=True)
