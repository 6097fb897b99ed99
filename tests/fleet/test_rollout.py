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

from build_side.fleet.history import History
from build_side.fleet.rollout import plan_waves
from build_side.fleet.rollout_machine import Step
from build_side.fleet.rollout_store import RolloutStore
from tests.conftest import cli


def test_plan_waves_canary_then_growing_batches() -> None:
    devs = [f"d{i}" for i in range(10)]
    assert [len(w) for w in plan_waves(devs, 0.1, 2.0)] == [1, 2, 4, 3]
    assert [len(w) for w in plan_waves(devs[:4], 1, 2.0)] == [1, 2, 1]
    assert [len(w) for w in plan_waves(devs, 0.25, 1.0)] == [3, 4, 3]  # growth 1 still grows by one
    assert plan_waves([], 0.1, 2.0) == []
    assert [d for w in plan_waves(devs, 0.5, 3.0) for d in w] == devs  # every device once, in order


def rollout_argv(
    fleet: str, registry: Path, key: Path, db: Path | str, *extra: str, group: str = "lab"
) -> list[str]:
    plan = [] if "--waves" in extra else ["--canary", "1", "--growth", "2"]
    return cli(
        "slmops", "rollout", "tiny-chat@2.0.0", "--group", group, *plan,
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
    assert [(r["status"], r["step"]) for r in json.loads(listed.stdout)] == [("succeeded", "SUCCEEDED")]


def test_bad_plans_are_refused_before_anything_is_sent(
    registry: Path, key_file: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from build_side.cli.main import app

    for extra, says in (
        (["--waves", "10,50"], "the last wave must reach 100%"),
        (["--waves", "50,10,100"], "must rise"),
        (["--waves", "1,x,100"], "could not convert"),
        (["--waves", "1,100", "--canary", "0.2"], "--waves replaces --canary and --growth"),
        (["--max-failed", "2"], "max_failed: Input should be less than or equal to 1"),
        (["--canary", "0"], "canary: Input should be greater than 0"),
    ):
        argv = [
            "rollout", "tiny-chat@2.0.0", "--group", "lab", *extra, "--registry", str(registry),
            "--key", str(key_file), "--db", str(tmp_path / "f.db"),
        ]  # fmt: skip
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 1 and says in result.output, result.output
    assert not (tmp_path / "f.db").exists()  # refused before the history was even opened


def test_an_operator_killed_during_wave_2_resumes_without_redeploying_finished_devices(
    fleet_id: str,
    registry: Path,
    key_file: Path,
    scripted,  # type: ignore[no-untyped-def]
    history_db: str,
) -> None:
    # --waves 1,10,50,100 over 10 devices plans waves 0-3: [dev-0], [dev-1], [dev-2..dev-4], [dev-5..dev-9];
    # in wave 2 dev-3 and dev-4 take a few seconds, dev-2 a fraction of one.
    devs = [
        scripted(f"dev-{i}", groups=("lab",), active="tiny-chat@1.0.0", delay_s=1.2 if i in (3, 4) else 0.05)
        for i in range(10)
    ]
    argv = rollout_argv(fleet_id, registry, key_file, history_db, "--waves", "1,10,50,100")
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    with History(history_db) as history:
        store = RolloutStore(history)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # kill it once part of wave 2 is done and part is not
                rows = store.list(fleet_id)
                wave2 = {d.status for d in store.devices(rows[0].id, 2)} if rows else set()
                if {"succeeded", "published"} <= wave2:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the rollout never got half-way through wave 2")
        finally:
            first.kill()  # SIGKILL: no clean-up of any kind
            first.wait()
        ro = store.get(rows[0].id)
        assert (ro.step, ro.wave, ro.status) == (Step.WAITING, 2, "running")
        finished = {d.device for d in store.devices(ro.id) if d.status == "succeeded"}
        assert finished == {"dev-0", "dev-1", "dev-2"}

    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["id"] == ro.id and report["status"] == "succeeded" and report["step"] == "SUCCEEDED"
    assert [[d["device"] for d in w["devices"]] for w in report["waves"]] == [
        ["dev-0"],
        ["dev-1"],
        ["dev-2", "dev-3", "dev-4"],
        [f"dev-{i}" for i in range(5, 10)],
    ]
    assert {d["status"] for w in report["waves"] for d in w["devices"]} == {"succeeded"}
    for d in devs:
        assert d.active == "tiny-chat@2.0.0"
        assert len(d.received) == 1, (d.device, [s.deployment_id for s in d.received])  # none sent twice
    with History(history_db) as history:
        assert len([r for r in history.deployments(fleet_id) if r.rollout_id == ro.id]) == 10


def test_two_operators_rolling_out_at_once_write_one_consistent_history(
    fleet_id: str,
    registry: Path,
    key_file: Path,
    scripted,  # type: ignore[no-untyped-def]
    history_db: str,
) -> None:
    groups = {"east": ["e-0", "e-1", "e-2"], "west": ["w-0", "w-1", "w-2"]}
    devs = {
        name: scripted(name, groups=(group,), active="tiny-chat@1.0.0")
        for group, names in groups.items()
        for name in names
    }
    procs = [  # two operator processes, one history (a fresh one: both also race to create it)
        subprocess.Popen(
            rollout_argv(fleet_id, registry, key_file, history_db, "--waves", "50,100", group=group),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for group in groups
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert json.loads(out)["status"] == "succeeded"
    assert all(d.active == "tiny-chat@2.0.0" and len(d.received) == 1 for d in devs.values())

    with History(history_db) as history:
        rollouts = RolloutStore(history).list(fleet_id)
        assert sorted((r.group, r.status) for r in rollouts) == [("east", "succeeded"), ("west", "succeeded")]
        deployments = history.deployments(fleet_id)
        assert sorted(r.target for r in deployments) == sorted(devs)
        revisions = [r.revision for r in deployments]
        assert len(set(revisions)) == len(revisions)  # no revision handed out twice
        assert history.next_revision(fleet_id) == max(revisions) + 1
        for name in devs:  # each device's events once each, whichever operator saw them first
            assert [e.seq for e in history.events(fleet_id, device=name)] == list(range(6)), name
