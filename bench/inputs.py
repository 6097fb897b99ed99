"""Turn command-line inputs into cases: bundle variants (local or from a registry), ONNX folders,
Hugging Face folders (PyTorch) and GGUF files (llama.cpp), crossed with providers and thread counts.

A bundle fetched over HTTP lands in the cache with every file checked against the manifest's sha256;
with trusted keys the manifest's signature is checked first, as the agent does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import platformdirs

from bench.cases import CaseSpec
from edge_agent.bundle_check import MANIFEST, SIGNATURE, check_file, parse_manifest, verify_manifest_bytes
from edge_agent.contracts import BundleManifest
from edge_agent.errors import BundleError, ContractError, SourceError
from edge_agent.signing import TrustedKeys


def cache_root() -> Path:
    return Path(os.environ.get("SLMOPS_CACHE_DIR") or platformdirs.user_cache_dir("slmops")) / "bench"


@dataclass
class BundleSource:
    """A bundle on disk (downloaded when it came from a URL) and its manifest."""

    root: Path
    manifest: BundleManifest


def bundle_url(spec: str, registry: str | None) -> str | None:
    """`http://host/bundles/n/1.0.0` as is; `n@1.0.0` with a registry URL -> its bundle URL."""
    if spec.startswith(("http://", "https://")):
        return spec.removesuffix("/" + MANIFEST).rstrip("/")
    if "@" in spec and registry and not Path(spec).exists():
        name, version = spec.split("@", 1)
        return f"{registry.rstrip('/')}/bundles/{name}/{version}"
    return None


def fetch_bundle(url: str, variants: list[str] | None, trusted: TrustedKeys | None) -> BundleSource:
    """Download the manifest and the chosen variants' files into the cache (kept when already valid)."""
    try:
        with httpx.Client(timeout=60, follow_redirects=True) as client:
            resp = client.get(f"{url}/{MANIFEST}")
            resp.raise_for_status()
            data = resp.content
            if trusted is not None:
                sig = client.get(f"{url}/{SIGNATURE}")
                manifest, _ = verify_manifest_bytes(
                    data, sig.content if sig.status_code == 200 else None, trusted, url
                )
            else:
                manifest = parse_manifest(data, url)
            root = cache_root() / "bundles" / manifest.name / manifest.version
            for variant in manifest.variants:
                if variants and variant.id not in variants:
                    continue
                for entry in variant.files:
                    target = root / entry.path
                    try:
                        check_file(root, entry)
                        continue
                    except BundleError:
                        pass
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tmp = target.with_name(target.name + ".part")
                    with client.stream("GET", f"{url}/{entry.path}") as stream:
                        stream.raise_for_status()
                        with open(tmp, "wb") as fh:
                            for chunk in stream.iter_bytes(1 << 20):
                                fh.write(chunk)
                    os.replace(tmp, target)
                    check_file(root, entry)
    except httpx.HTTPError as exc:
        raise SourceError(f"{url}: could not fetch the bundle: {exc}") from exc
    (root / MANIFEST).write_bytes(data)
    return BundleSource(root, manifest)


def load_bundle(
    spec: str, registry: str | None, variants: list[str] | None, trusted: TrustedKeys | None
) -> BundleSource:
    url = bundle_url(spec, registry)
    if url:
        return fetch_bundle(url, variants, trusted)
    root = Path(spec)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise ContractError(spec, "not a bundle folder (no manifest.json) nor a bundle URL")
    if trusted is not None:
        sig = root / SIGNATURE
        manifest, _ = verify_manifest_bytes(
            mpath.read_bytes(), sig.read_bytes() if sig.is_file() else None, trusted, mpath
        )
    else:
        manifest = parse_manifest(mpath.read_bytes(), mpath)
    return BundleSource(root, manifest)


def bundle_cases(source: BundleSource, variants: list[str] | None) -> list[CaseSpec]:
    out = []
    known = [v.id for v in source.manifest.variants]
    for wanted in variants or []:
        if wanted not in known:
            raise ContractError(source.manifest.ref, f"has no variant {wanted!r} (has {known})")
    for variant in source.manifest.variants:
        if variants and variant.id not in variants:
            continue
        q = (
            variant.quantization.model_dump(exclude_none=True, exclude={"extra"})
            if variant.quantization
            else {}
        )
        out.append(
            CaseSpec(
                engine="onnxruntime-genai",
                path=source.root / variant.id,
                model=source.manifest.ref,
                variant=variant.id,
                precision=variant.precision,
                quantization=q,
            )
        )
    return out


def path_case(engine: str, path: Path, precision: str | None = None) -> CaseSpec:
    path = Path(path)
    if not path.exists():
        raise ContractError(path, "does not exist")
    if engine == "onnxruntime-genai" and not (path / "genai_config.json").is_file():
        raise ContractError(path, "not an ONNX variant folder (no genai_config.json)")
    if engine == "pytorch" and not (path / "config.json").is_file():
        raise ContractError(path, "not a Hugging Face model folder (no config.json)")
    if engine == "llama.cpp" and not path.is_file():
        raise ContractError(path, "not a GGUF file")
    variant = {"onnxruntime-genai": path.name, "pytorch": precision or "fp32"}.get(engine, path.stem)
    if engine == "llama.cpp":
        variant = gguf_variant(path)
    return CaseSpec(engine=engine, path=path, model=str(path), variant=variant, precision=precision)


def gguf_variant(path: Path) -> str:
    """`SmolLM2-135M-Instruct.Q4_1.gguf` -> `q4_1`; otherwise the file's stem."""
    stem = path.stem
    tail = stem.rsplit(".", 1)[-1] if "." in stem else stem
    return tail.lower()


def expand(cases: list[CaseSpec], providers: list[str], threads: list[int | None]) -> list[CaseSpec]:
    """Each case at each thread count; ONNX cases also at each provider (peers run on CPU only)."""
    out = []
    for case in cases:
        for provider in providers if case.engine == "onnxruntime-genai" else ["CPUExecutionProvider"]:
            for t in threads:
                out.append(case.model_copy(update={"provider": provider, "threads": t}))
    return out


__all__ = ["BundleSource", "bundle_cases", "expand", "fetch_bundle", "load_bundle", "path_case"]
