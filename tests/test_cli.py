"""The three command lines start, explain themselves, and the key commands work end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import cli


@pytest.mark.parametrize("prog", ["slmops", "edge-agent", "bench"])
def test_help_explains(prog: str) -> None:
    out = subprocess.run(cli(prog, "--help"), capture_output=True, text=True, check=True).stdout
    assert "Usage:" in out and len(out) > 300


def test_keys_generate_and_list(tmp_path: Path) -> None:
    made = subprocess.run(
        cli("slmops", "keys", "generate", "--out", str(tmp_path), "--json"),
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(made.stdout)
    assert Path(info["public_key"]).is_file() and info["key_id"].startswith("ed25519-")
    listed = subprocess.run(
        cli("slmops", "keys", "list", "--dir", str(tmp_path), "--json"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert [k["key_id"] for k in json.loads(listed.stdout)] == [info["key_id"]]


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        cli("slmops", "manifest", "verify", str(tmp_path), "-k", str(tmp_path)),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "Error:" in proc.stderr and "Traceback" not in proc.stderr
