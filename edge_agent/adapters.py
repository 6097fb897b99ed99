"""Which LoRA adapters a loaded variant gets, each checked against the base it was exported for.

An adapter is a low-rank update of particular weights: on any other base it loads without complaint
and answers nonsense. So every adapter names the weights it belongs to (`weights_sha256`, the digest
of the variant's ONNX files) and the agent refuses one whose base is not the variant it would run on,
before loading it. From a bundle the digest comes from the manifest (whose files were verified at
install); from a bare variant folder it is computed from the files, and each adapter file needs its
card (`<name>.adapter.json`, written by `slmops adapters export`) to say what base it was made for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from edge_agent.contracts import (
    AdapterCard,
    AdapterInfo,
    BundleManifest,
    FileEntry,
    weights_digest,
)
from edge_agent.contracts.manifest import WEIGHT_SUFFIXES
from edge_agent.errors import ContractError, IncompatibleError

CARD_SUFFIX = ".adapter.json"


@dataclass(frozen=True)
class ResolvedAdapter:
    """An adapter ready to load on one variant: its file and what the API applies with it."""

    info: AdapterInfo
    path: Path

    @property
    def name(self) -> str:
        return self.info.name


def _mismatch(name: str, variant: str, want: str, have: str) -> IncompatibleError:
    return IncompatibleError(
        f"adapter {name!r} was exported for base weights {want[:12]}, but {variant}'s weights are "
        f"{have[:12]}: it belongs to another base (rebuild the release with this base)"
    )


def check_bases(manifest: BundleManifest, variant_id: str) -> None:
    """Refuse the release when one of its adapters for `variant_id` names other base weights: the
    manifest alone tells, so the agent refuses before it downloads anything."""
    variant = manifest.variant(variant_id)
    have = variant.weights_digest()
    for adapter in manifest.adapters:
        base = adapter.base_for(variant_id)
        if base is not None and base.weights_sha256 != have:
            raise _mismatch(adapter.name, f"{manifest.ref} {variant_id}", base.weights_sha256, have)


def from_manifest(manifest: BundleManifest, variant_id: str, install_dir: Path) -> list[ResolvedAdapter]:
    """The manifest's adapters for `variant_id`, each checked against the variant's weights digest."""
    check_bases(manifest, variant_id)
    out = []
    for adapter in manifest.adapters:
        base = adapter.base_for(variant_id)
        if base is None:
            continue
        info = AdapterInfo.model_validate(adapter.model_dump(include=set(AdapterInfo.model_fields)))
        out.append(ResolvedAdapter(info, Path(install_dir) / base.file))
    return out


def folder_digest(variant_dir: Path) -> str:
    """weights_digest of a variant folder's ONNX files, hashed from disk."""
    entries = []
    for f in sorted(Path(variant_dir).iterdir()):
        if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES):
            with f.open("rb") as fh:
                sha = hashlib.file_digest(fh, "sha256").hexdigest()
            entries.append(FileEntry(path=f.name, size=f.stat().st_size, sha256=sha))
    return weights_digest(entries)


def from_folder(variant_dir: Path) -> list[ResolvedAdapter]:
    """The `.onnx_adapter` files in a variant folder (or its `adapters/`), each with its card."""
    variant_dir = Path(variant_dir)
    files = sorted(variant_dir.glob("*.onnx_adapter")) + sorted(variant_dir.glob("adapters/*.onnx_adapter"))
    if not files:
        return []
    have = folder_digest(variant_dir)
    out = []
    for path in files:
        card_path = path.with_name(path.name.removesuffix(".onnx_adapter") + CARD_SUFFIX)
        try:
            card = AdapterCard.model_validate_json(card_path.read_bytes())
        except OSError as exc:
            raise IncompatibleError(
                f"{path}: no adapter card {card_path.name} beside it, so its base cannot be checked "
                "(`slmops adapters export` writes one)"
            ) from exc
        except ValueError as exc:
            raise ContractError(card_path, str(exc)) from exc
        if card.base_weights_sha256 != have:
            raise _mismatch(card.name, str(variant_dir), card.base_weights_sha256, have)
        info = AdapterInfo.model_validate(card.model_dump(include=set(AdapterInfo.model_fields)))
        out.append(ResolvedAdapter(info, path))
    return out


__all__ = ["CARD_SUFFIX", "ResolvedAdapter", "check_bases", "folder_digest", "from_folder", "from_manifest"]
