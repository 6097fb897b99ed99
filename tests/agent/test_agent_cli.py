"""edge-agent run/status/install-service from the command line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.agent.helpers import write_config
from tests.conftest import cli


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli("edge-agent", *args), capture_output=True, text=True)


def test_run_with_a_bad_config_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "agent.yaml"
    bad.write_text("device_id: Not_An_Id\nfleet: f\n")
    proc = run("run", "--config", str(bad))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{bad}:1: device_id" in proc.stderr and "registry_url: Field required" in proc.stderr


def test_install_service_writes_a_unit_that_runs_this_config(tmp_path: Path, keys_dir: Path) -> None:
    config = write_config(tmp_path, "lab", "http://127.0.0.1:9/", keys_dir)
    dry = run("install-service", "--config", str(config), "--dry-run", "--user", "edge")
    assert dry.returncode == 0, dry.stderr
    assert f"-m edge_agent run --config {config}" in dry.stdout and "User=edge" in dry.stdout
    assert "Type=notify" in dry.stdout and f"ReadWritePaths={tmp_path / 'state'}" in dry.stdout
    wrote = run(
        "install-service", "--config", str(config), "--dest", str(tmp_path / "units"), "--user", "edge"
    )
    assert wrote.returncode == 0 and (tmp_path / "units" / "edge-agent.service").read_text() == dry.stdout


def test_status_works_on_a_fresh_device(tmp_path: Path) -> None:
    proc = run("status", "--state-dir", str(tmp_path / "nothing-yet"), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["active"] is None and info["installed"] == [] and info["events"] == []
    table = run("status", "--state-dir", str(tmp_path / "nothing-yet"))
    assert table.returncode == 0 and "active" in table.stdout and "none" in table.stdout
    assert not (tmp_path / "nothing-yet").exists(), "status only reads"
