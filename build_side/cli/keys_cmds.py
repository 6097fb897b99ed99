"""`slmops keys`: the Ed25519 keys that sign manifests, the registry index and desired states."""

from __future__ import annotations

from pathlib import Path

import typer

from build_side.cli.output import console, print_json, table
from build_side.settings import keys_dir
from edge_agent.signing import SigningKey

keys_app = typer.Typer(help="Create and list signing keys.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def generate(
    out: Path = typer.Option(
        None, "--out", "-o", help="Directory for the key files (default: $SLMOPS_HOME/keys)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Create a new Ed25519 key pair: `<key-id>.key` (private, mode 0600) and `<key-id>.pub`.

    Give the `.pub` file to devices (edge-agent `trusted_keys`); keep the `.key` file secret.
    """
    key = SigningKey.generate()
    priv, pub = key.save(out or keys_dir())
    if json_out:
        print_json({"key_id": key.key_id, "private_key": str(priv), "public_key": str(pub)})
    else:
        console.print(f"key id       {key.key_id}\nprivate key  {priv}\npublic key   {pub}")


@keys_app.command("list")
def list_keys(
    directory: Path = typer.Option(None, "--dir", help="Key directory (default: $SLMOPS_HOME/keys)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """List the key pairs in the key directory."""
    d = directory or keys_dir()
    rows = [
        {"key_id": p.stem, "private": (p.with_suffix(".key")).exists(), "public_key": str(p)}
        for p in sorted(d.glob("*.pub"))
    ]
    if json_out:
        print_json(rows)
    else:
        console.print(
            table(f"keys in {d}", ["key id", "private key", "public key"], [list(r.values()) for r in rows])
        )


def default_signing_key(path: Path | None) -> SigningKey:
    """The key given (a `.key` file, or a folder holding exactly one, as the default folder is), else
    the only private key in the key directory (a clear error otherwise)."""
    from edge_agent.errors import KeyFileError

    folder = keys_dir()
    if path and not Path(path).is_dir():
        return SigningKey.load(path)
    if path:
        folder = Path(path)
    found = sorted(folder.glob("*.key"))
    if len(found) == 1:
        return SigningKey.load(found[0])
    if not found:
        raise KeyFileError(f"no signing key (*.key) in {folder}; create one with `slmops keys generate`")
    raise KeyFileError(f"several keys in {folder}; name the .key file with --key")
