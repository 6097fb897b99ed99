"""`slmops manifest`: check a bundle against its signed manifest."""

from __future__ import annotations

from pathlib import Path

import typer

from build_side.cli.output import console, err_console, print_json
from build_side.settings import keys_dir
from edge_agent.bundle_check import verify_bundle
from edge_agent.errors import BundleError
from edge_agent.signing import TrustedKeys

manifest_app = typer.Typer(help="Verify and inspect bundle manifests.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(manifest_app, name="manifest")


def trusted_from(options: list[Path] | None) -> TrustedKeys:
    return TrustedKeys.from_paths(options or [keys_dir()])


@manifest_app.command("verify")
def verify(
    bundle_dir: Path = typer.Argument(..., help="Bundle directory holding manifest.json and manifest.sig."),
    trusted_key: list[Path] = typer.Option(
        None,
        "--trusted-key",
        "-k",
        help="Trusted public key file or directory (repeatable; default: $SLMOPS_HOME/keys).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check the signature against trusted keys, then every file's size and sha256 and that no path
    escapes the bundle. Exits non-zero and names each problem when anything is wrong."""
    report = verify_bundle(bundle_dir, trusted_from(trusted_key))
    if json_out:
        print_json(
            {
                "bundle": report.manifest.ref,
                "key_id": report.key_id,
                "ok": report.ok,
                "files_checked": report.files_checked,
                "problems": [str(p) for p in report.problems],
            }
        )
    elif report.ok:
        console.print(
            f"[green]OK[/] {report.manifest.ref}: signed by {report.key_id}, "
            f"{report.files_checked} files ({report.bytes_checked / 1e6:.1f} MB) match the manifest"
        )
    if not report.ok:
        for p in report.problems:
            err_console.print(f"[red]FAIL[/] {p}")
        raise BundleError(bundle_dir, f"{len(report.problems)} file(s) do not match the manifest")
