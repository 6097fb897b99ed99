"""`slmops bundle` and `slmops publish`: make a signed release from converted variants, put it in a registry."""

from __future__ import annotations

from pathlib import Path

import typer

from build_side.cli.output import console, print_json
from build_side.settings import home_dir


def register(app: typer.Typer) -> None:
    app.command("bundle")(bundle)
    app.command("publish")(publish)


def default_registry() -> Path:
    return home_dir() / "registry"


def parse_adapter_file(text: str):
    """`NAME=FILE.onnx_adapter[@variant,variant]`."""
    from build_side.bundle import AdapterFile
    from edge_agent.errors import BuildError

    name, sep, rest = text.partition("=")
    path, _, variants = rest.partition("@")
    if not sep or not path:
        raise BuildError(f"adapter {text!r}: expected NAME=FILE.onnx_adapter[@variant,...]")
    return AdapterFile(name=name, path=Path(path), variants=variants.split(",") if variants else None)


def bundle(
    convert_dir: Path = typer.Argument(..., help="Output folder of `slmops convert` (variants + records)."),
    name: str = typer.Option(..., "--name", "-n", help="Bundle name: lowercase, digits, dashes."),
    version: str = typer.Option(..., "--version", help="Semantic version of this release, e.g. 1.0.0."),
    out: Path = typer.Option(
        Path("bundles"), "--out", "-o", help="Bundles are written to OUT/<name>/<version>/."
    ),
    variant: list[str] = typer.Option(None, "--variant", "-v", help="Variant ids to include (default: all)."),
    adapter: list[str] = typer.Option(
        None,
        "--adapter",
        help="NAME=FILE.onnx_adapter[@variant,...]: a LoRA adapter file to ship (repeatable).",
    ),
    description: str = typer.Option("", help="One line about the release."),
    task: str = typer.Option("chat", help="chat or completion."),
    max_length: int = typer.Option(2048, help="Generation default: prompt + reply tokens."),
    temperature: float = typer.Option(0.0, help="Generation default: 0 is greedy."),
    top_p: float = typer.Option(1.0, help="Generation default: nucleus sampling mass."),
    repetition_penalty: float = typer.Option(1.0, help="Generation default."),
    key: Path = typer.Option(
        None, "--key", "-k", help="Private signing key (default: the one in $SLMOPS_HOME/keys)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Assemble NAME@VERSION from converted variants and adapter files: copy each variant folder, add a
    Foundry Local style inference_model.json, list every file's size and sha256 in manifest.json
    (with quality figures, memory estimate, generation defaults), and sign it (manifest.sig)."""
    from build_side.bundle import BundleSettings, assemble
    from build_side.cli.keys_cmds import default_signing_key
    from edge_agent.contracts import GenerationDefaults

    signing_key = default_signing_key(key)
    settings = BundleSettings(
        name=name,
        version=version,
        description=description,
        task=task,
        variants=variant or None,
        generation_defaults=GenerationDefaults(
            max_length=max_length, temperature=temperature, top_p=top_p, repetition_penalty=repetition_penalty
        ),
        adapters=[parse_adapter_file(a) for a in adapter or []],
    )
    with console.status(f"assembling {name}@{version} ..."):
        result = assemble(convert_dir, out, settings, signing_key)
    summary = {
        "bundle": result.manifest.ref,
        "path": str(result.path),
        "manifest_sha256": result.manifest_sha256,
        "key_id": signing_key.key_id,
        "variants": [v.id for v in result.manifest.variants],
        "files": len(result.manifest.all_files()),
        "size_bytes": sum(f.size for f in result.manifest.all_files()),
    }
    if json_out:
        print_json(summary)
        return
    console.print(
        f"[green]bundled[/] {summary['bundle']} -> {result.path}\n"
        f"  {summary['files']} files, {summary['size_bytes'] / 1e6:.1f} MB, variants {', '.join(summary['variants'])}\n"
        f"  signed by {signing_key.key_id}, manifest sha256 {result.manifest_sha256[:16]}"
    )


def publish(
    bundle_dir: Path = typer.Argument(..., help="A bundle folder (manifest.json + manifest.sig + files)."),
    registry: Path = typer.Option(
        None, "--registry", "-r", help="Registry directory (default: $SLMOPS_HOME/registry)."
    ),
    key: Path = typer.Option(
        None, "--key", "-k", help="Private key that signs the index (default: $SLMOPS_HOME/keys)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Verify BUNDLE_DIR, copy it into REGISTRY/bundles/<name>/<version>/ atomically, and re-sign the
    registry's index.json. Publishing the same content again changes nothing; a different bundle under
    a published name@version is refused (versions are immutable: bump the version)."""
    from build_side.cli.keys_cmds import default_signing_key
    from build_side.registry import publish as do_publish

    root = registry or default_registry()
    with console.status(f"publishing {bundle_dir} ..."):
        result = do_publish(bundle_dir, root, default_signing_key(key))
    if json_out:
        print_json(
            {
                "bundle": result.ref,
                "path": str(result.path),
                "manifest_sha256": result.manifest_sha256,
                "published": result.published,
                "registry": str(root),
            }
        )
    elif result.published:
        console.print(f"[green]published[/] {result.ref} -> {result.path}")
    else:
        console.print(f"{result.ref} is already in {root} with the same content: nothing to do")
