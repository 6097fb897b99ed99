"""`slmops rollout`: waves, the failure threshold, rolling a failed wave back, resuming after a kill.

Devices here are scripted (tests/fleet/scripted_device.py) over the real broker; test_multi_agent.py
runs the same story with real edge agents.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

from build_side.fleet.rollout import plan_waves
from tests.conftest import cli


def test_plan_waves_canary_then_growing_batches() -> None:
    devs = [f"d{i}" for i in range(10)]
    assert [len(w) for w in plan_waves(devs, 0.1, 2.0)] == [1, 2, 4, 3]
    assert [len(w) for w in plan_waves(devs[:4], 1, 2.0)] == [1, 2, 1]
    assert [len(w) for w in plan_waves(devs, 0.25, 1.0)] == [3, 4, 3]  # growth 1 still grows by one
    assert plan_waves([], 0.1, 2.0) == []
    assert [d for w in plan_waves(devs, 0.5, 3.0) for d in w] == devs  # every device once, in order


def rollout_argv(fleet: str, registry: Path, key: Path, db: Path, *extra: str) -> list[str]:
    return cli(
        "slmops", "rollout", "tiny-chat@2.0.0", "--group", "lab", "--canary", "1", "--growth", "2",
        "--wave-timeout", "20", "--registry", str(registry), "--fleet", fleet, "--key", str(key),
        "--db", str(db), "--json", *extra,
    )  # fmt: skip


def test_a_failing_device_stops_the_rollout_and_its_wave_goes_back(
    fleet_id: str,
    registry: Path,
    key_file: Path,
    scripted,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    devs = {
        name: scripted(
            name,
            groups=("lab",),
            active="tiny-chat@1.0.0",
            fail={"tiny-chat@2.0.0"} if name == "dev-2" else None,
        )
        for name in ("dev-0", "dev-1", "dev-2", "dev-3")
    }
    outsider = scripted("dev-x", groups=("other",), active="tiny-chat@1.0.0")
    proc = subprocess.run(
        rollout_argv(fleet_id, registry, key_file, tmp_path / "f.db"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "rolled-back"
    waves = {w["wave"]: w for w in report["waves"]}
    assert [d["device"] for d in waves[0]["devices"]] == ["dev-0"] and waves[0]["status"] == "succeeded"
    assert waves[1]["status"] == "rolled-back"
    results = {d["device"]: d for d in waves[1]["devices"]}
    assert results["dev-1"]["status"] == "succeeded"
    assert results["dev-2"]["status"] == "failed" and "HEALTH_CHECK_FAILED" in results["dev-2"]["detail"]
    assert {d["rollback_status"] for d in results.values()} == {"succeeded"}
    assert waves[2]["status"] == "pending"

    assert devs["dev-0"].active == "tiny-chat@2.0.0"  # the canary keeps the new version
    assert devs["dev-1"].active == "tiny-chat@1.0.0"  # rolled back with its wave
    assert devs["dev-2"].active == "tiny-chat@1.0.0"
    assert devs["dev-3"].active == "tiny-chat@1.0.0" and devs["dev-3"].received == []  # never touched
    assert outsider.received == []
    # the rollback is a newer desired state pointing at the version each device ran before
    back = devs["dev-1"].received[-1]
    assert back.bundle.ref == "tiny-chat@1.0.0" and back.revision > devs["dev-1"].received[0].revision


def test_a_stopped_rollout_resumes_without_publishing_twice(
    fleet_id: str,
    registry: Path,
    key_file: Path,
    scripted,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    devs = [scripted(f"dev-{i}", groups=("lab",), active="tiny-chat@1.0.0", delay_s=0.4) for i in range(3)]
    db = tmp_path / "f.db"
    first = subprocess.Popen(rollout_argv(fleet_id, registry, key_file, db), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # stop it while the canary is being installed
            try:
                with sqlite3.connect(db) as con:
                    rows = con.execute("SELECT status FROM rollout_devices WHERE wave = 0").fetchall()
            except sqlite3.OperationalError:  # not created yet
                rows = []
            if rows == [("published",)]:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the rollout never published its canary")
    finally:
        first.kill()
        first.wait()
    assert first.returncode != 0
    proc = subprocess.run(
        rollout_argv(fleet_id, registry, key_file, db), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "succeeded"
    assert [w["status"] for w in report["waves"]] == ["succeeded", "succeeded"]
    for d in devs:
        assert d.active == "tiny-chat@2.0.0"
        ids = [s.deployment_id for s in d.received]
        assert len(ids) == len(set(ids)) == 1, ids  # one desired state each, none sent twice
    listed = subprocess.run(
        cli("slmops", "fleet", "rollouts", "--json", "--fleet", fleet_id, "--db", str(db)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert [r["status"] for r in json.loads(listed.stdout)] == ["succeeded"]
