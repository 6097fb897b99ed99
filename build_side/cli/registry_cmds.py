"""`slmops registry`: serve a registry directory over HTTP and list what a registry holds."""

from __future__ import annotations

from pathlib import Path

import typer

from build_side.cli.output import console, err_console, print_json, table

registry_app = typer.Typer(help="Serve and list model registries.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")


@registry_app.command("serve")
def serve(
    directory: Path = typer.Argument(..., help="Registry directory (index.json, bundles/, keys/ ...)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes it to the network."),
    port: int = typer.Option(8080, "--port", "-p", help="TCP port."),
) -> None:
    """Serve DIRECTORY as static files with Range requests, HEAD and ETags (what devices download
    from). For local use and tests; production can use any static server, object store or CDN."""
    import uvicorn

    from build_side.registry_server import registry_app as make_app

    if not directory.is_dir():
        from edge_agent.errors import RegistryError

        raise RegistryError(f"{directory}: no such registry directory")
    console.print(f"serving {directory.resolve()} on http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(make_app(directory), host=host, port=port, log_level="warning")


@registry_app.command("dedupe")
def dedupe_cmd(
    directory: Path = typer.Argument(..., help="Registry directory."),
) -> None:
    """Store each file's content once in DIRECTORY (a registry published before blobs, or one with
    copies): every published file becomes a hardlink to `blobs/sha256/<hex>`. URLs and bytes stay
    the same, so devices and servers notice nothing; `registry ls` shows the disk before and after."""
    from build_side.registry import dedupe
    from build_side.registry_blobs import disk_bytes

    if not directory.is_dir():
        from edge_agent.errors import RegistryError

        raise RegistryError(f"{directory}: no such registry directory")
    before = disk_bytes(directory)
    freed = dedupe(directory)
    after = disk_bytes(directory)
    console.print(
        f"{directory}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB on disk ({freed / 1e6:.1f} MB freed)"
    )


@registry_app.command("ls")
def ls(
    location: str = typer.Argument(..., help="Registry directory or base URL (http://host:port/)."),
    trusted_key: list[Path] = typer.Option(
        None,
        "--trusted-key",
        "-k",
        help="Public key file or directory that must have signed the index (default: $SLMOPS_HOME/keys).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the index and its signature status as JSON."),
) -> None:
    """List the releases a registry holds (name, version, variants, size, created), newest first per
    name, and say whether index.json's signature is from a trusted key. Sizes: MB is each release's
    files in full, stored MB what it adds to a registry that keeps each file's content once; the
    totals add the disk a registry directory really uses (hardlinks counted once)."""
    from build_side.registry import is_url, read_index
    from build_side.registry_blobs import disk_bytes
    from build_side.settings import keys_dir
    from edge_agent.signing import TrustedKeys

    paths = trusted_key or ([keys_dir()] if keys_dir().is_dir() else [])
    read = read_index(location, TrustedKeys.from_paths(paths) if paths else None)
    entries = sorted(read.index.bundles, key=lambda b: (b.name, b.created), reverse=False)
    size = {
        "logical_bytes": sum(b.size_bytes for b in entries),
        "stored_bytes": sum(b.stored_bytes for b in entries if b.stored_bytes is not None)
        if all(b.stored_bytes is not None for b in entries)
        else None,
        "disk_bytes": None if is_url(location) else disk_bytes(Path(location)),
    }
    if json_out:
        print_json(
            {
                "registry": location,
                "signature": {"key_id": read.key_id, "verified": read.verified, "problem": read.problem},
                "bundles": [b.model_dump(mode="json") for b in entries],
                "size": size,
            }
        )
        return
    rows = [
        [
            b.name,
            b.version,
            ", ".join(b.variants),
            f"{b.size_bytes / 1e6:.1f}",
            "?" if b.stored_bytes is None else f"{b.stored_bytes / 1e6:.3f}",
            b.created.strftime("%Y-%m-%d %H:%M"),
            b.manifest_sha256[:12],
        ]
        for b in entries
    ]
    console.print(
        table(
            f"registry {location}",
            ["name", "version", "variants", "MB", "stored MB", "created", "manifest"],
            rows,
        )
    )
    line = f"{len(entries)} releases: {size['logical_bytes'] / 1e6:.1f} MB in full"
    if size["stored_bytes"] is not None:
        line += f", {size['stored_bytes'] / 1e6:.1f} MB stored (each file's content once)"
    if size["disk_bytes"] is not None:
        line += f", {size['disk_bytes'] / 1e6:.1f} MB on disk"
    console.print(line)
    if read.verified:
        console.print(f"index signed by {read.key_id} (trusted)")
    else:
        err_console.print(f"[yellow]index signature not verified[/]: {read.problem}")
