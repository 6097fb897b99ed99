"""A history made before migrations existed upgrades in place, keeps every row and its order, and its
rollouts resume in the step they stood in; the migrations also go down and up again on both engines."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from build_side.fleet.db import head_revision
from build_side.fleet.db.migrate import alembic_config
from build_side.fleet.history import History
from build_side.fleet.rollout_machine import Step
from build_side.fleet.rollout_store import RolloutParams, RolloutStore
from edge_agent.contracts import BenchMeta, BenchRecord, BundleRef
from edge_agent.signing import SigningKey
from tests.conftest import cli

# The schema as the hand-written `CREATE TABLE IF NOT EXISTS` script of the first history made it.
FIRST_SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
    fleet TEXT PRIMARY KEY,
    last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    deployment_id TEXT PRIMARY KEY,
    fleet TEXT NOT NULL,
    target_kind TEXT NOT NULL,          -- device, group or channel
    target TEXT NOT NULL,
    bundle TEXT NOT NULL,               -- name@version
    revision INTEGER NOT NULL,
    rollout_id TEXT,
    document TEXT NOT NULL,             -- the signed desired state as published
    created TEXT NOT NULL,
    published TEXT                      -- set once the broker acknowledged (or the file was written)
);
CREATE TABLE IF NOT EXISTS events (
    fleet TEXT NOT NULL,
    device TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    time TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (fleet, device, deployment_id, seq)
);
CREATE TABLE IF NOT EXISTS bench (
    fleet TEXT NOT NULL,
    device TEXT NOT NULL,
    time TEXT NOT NULL,
    model TEXT NOT NULL,
    variant TEXT NOT NULL,
    provider TEXT NOT NULL,
    scenario TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (fleet, device, time, model, variant, provider, scenario)
);
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    fleet TEXT NOT NULL,
    grp TEXT NOT NULL,
    bundle TEXT NOT NULL,               -- BundleRef JSON of the target
    params TEXT NOT NULL,               -- RolloutParams JSON
    status TEXT NOT NULL,               -- running, succeeded, stopped, rolled-back
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS rollout_devices (
    rollout_id TEXT NOT NULL,
    device TEXT NOT NULL,
    wave INTEGER NOT NULL,
    previous TEXT,                      -- BundleRef JSON the device ran before, if any
    deployment_id TEXT,
    status TEXT NOT NULL,               -- pending, published, succeeded, failed, skipped
    detail TEXT NOT NULL DEFAULT '',
    rollback_deployment_id TEXT,
    rollback_status TEXT,               -- published, succeeded, failed, none
    PRIMARY KEY (rollout_id, device)
);
CREATE TABLE IF NOT EXISTS waves (
    rollout_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,               -- pending, deploying, succeeded, failed, rolled-back
    started TEXT,
    finished TEXT,
    PRIMARY KEY (rollout_id, idx)
);
"""

BUNDLE = BundleRef(
    name="tiny-chat",
    version="2.0.0",
    manifest_url="bundles/tiny-chat/2.0.0/manifest.json",
    manifest_sha256="0" * 64,
)
# rollout -> (status, its waves' statuses, the step and wave it must resume in)
ROLLOUTS = {
    "ro-new": ("running", ["pending", "pending"], Step.PLANNED, 0),
    "ro-mid": ("running", ["succeeded", "deploying", "pending"], Step.DEPLOYING, 1),
    "ro-eval": ("running", ["succeeded", "failed", "pending"], Step.EVALUATING, 1),
    "ro-back": ("rolling-back", ["succeeded", "failed", "pending"], Step.ROLLING_BACK, 1),
    "ro-rb": ("rolled-back", ["succeeded", "rolled-back", "pending"], Step.ROLLED_BACK, 1),
    "ro-done": ("succeeded", ["succeeded", "succeeded"], Step.SUCCEEDED, 1),
    "ro-ab": ("abandoned", ["succeeded", "pending"], Step.ABANDONED, 0),
}
# (device, seq, time): arrival order differs from time order on purpose
EVENTS = [
    ("a", 0, "2026-01-01T00:00:05+00:00"),
    ("b", 0, "2026-01-01T00:00:01+00:00"),
    ("a", 1, "2026-01-01T00:00:06+00:00"),
]


def event_doc(device: str, seq: int, time: str) -> str:
    return json.dumps(
        {"schema": "slmops.event/1", "device": device, "deployment_id": "dep-1", "seq": seq,
         "state": "ACCEPTED" if seq == 0 else "SUCCEEDED", "time": time, "revision": 3}
    )  # fmt: skip


@pytest.fixture
def first_schema_db(tmp_path: Path) -> Path:
    """A history as the first (pre-migration) code wrote it, with rows in every table."""
    path = tmp_path / "fleet.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(FIRST_SCHEMA)
    con.execute("INSERT INTO revisions VALUES ('f', 12)")
    for i in range(3):
        doc = {
            "deployment_id": f"dep-{i}",
            "revision": 10 + i,
            "bundle": {"name": "tiny-chat", "version": "2.0.0"},
        }
        con.execute(
            "INSERT INTO deployments VALUES (?, 'f', 'device', ?, 'tiny-chat@2.0.0', ?, 'ro-mid', ?, "
            "'2026-01-01T00:00:00+00:00', NULL)",
            (f"dep-{i}", f"d{i}", 10 + i, json.dumps(doc)),
        )
    for device, seq, time in EVENTS:
        con.execute(
            "INSERT INTO events VALUES ('f', ?, 'dep-1', ?, ?, ?, ?)",
            (device, seq, "ACCEPTED" if seq == 0 else "SUCCEEDED", time, event_doc(device, seq, time)),
        )
    record = BenchRecord(
        model="tiny-chat@2.0.0", variant="cpu-int4", engine="onnxruntime-genai",
        provider="CPUExecutionProvider", scenario="pp64-tg32", meta=BenchMeta(device="a"),
    )  # fmt: skip
    con.execute(
        "INSERT INTO bench VALUES ('f', 'a', ?, 'tiny-chat@2.0.0', 'cpu-int4', 'CPUExecutionProvider', "
        "'pp64-tg32', ?)",
        (record.time.isoformat(), record.model_dump_json(by_alias=True)),
    )
    params = RolloutParams().model_dump_json()
    for i, (rid, (status, waves, _, _)) in enumerate(ROLLOUTS.items()):
        con.execute(
            "INSERT INTO rollouts VALUES (?, 'f', 'lab', ?, ?, ?, ?, ?, '')",
            (
                rid,
                BUNDLE.model_dump_json(),
                params,
                status,
                f"2026-01-01T00:0{i}:00+00:00",
                "2026-01-02T00:00:00+00:00",
            ),
        )
        for idx, wave_status in enumerate(waves):
            con.execute(
                "INSERT INTO waves (rollout_id, idx, status) VALUES (?, ?, ?)", (rid, idx, wave_status)
            )
    for device, wave, status in (("d0", 0, "succeeded"), ("d1", 1, "published"), ("d2", 1, "pending")):
        con.execute(
            "INSERT INTO rollout_devices (rollout_id, device, wave, status, deployment_id) VALUES ('ro-mid', ?, ?, ?, ?)",
            (device, wave, status, None if status == "pending" else f"dep-{device[1]}"),
        )
    con.close()
    return path


def test_a_first_schema_history_upgrades_in_place(first_schema_db: Path) -> None:
    with History(first_schema_db) as h:
        assert (h.schema_before, h.schema) == (None, head_revision())
        assert [(e.device, e.seq) for e in h.events("f")] == [(d, s) for d, s, _ in EVENTS]  # arrival order
        assert {d: e.seq for d, e in h.last_events("f").items()} == {"a": 1, "b": 0}
        assert [r.revision for r in h.deployments("f")] == [12, 11, 10]
        assert h.next_revision("f") == 13  # the counter carries on
        assert [d for d, _ in h.bench_records("f")] == ["a"]
        store = RolloutStore(h)
        for rid, (status, waves, step, wave) in ROLLOUTS.items():
            ro = store.get(rid)
            assert (ro.status, ro.step, ro.wave) == (status, step, wave), rid
            assert [w.status for w in store.waves(rid)] == waves
        assert [(d.device, d.status) for d in store.devices("ro-mid", 1)] == [
            ("d1", "published"),
            ("d2", "pending"),
        ]
        assert [r.id for r in store.list("f")][:2] == ["ro-ab", "ro-done"]  # newest first
        assert store.unfinished("f", "lab", BUNDLE).id == "ro-back"  # the newest not finished
    with History(first_schema_db) as again:
        assert again.schema_before == head_revision()


def test_two_operators_opening_an_old_history_at_once_upgrade_it_once(first_schema_db: Path) -> None:
    argv = cli("slmops", "fleet", "rollouts", "--json", "--fleet", "f", "--db", str(first_schema_db))
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert sorted(r["id"] for r in json.loads(out)) == sorted(ROLLOUTS)
    with History(first_schema_db) as h:
        assert len(h.events("f")) == len(EVENTS)


def test_the_migrations_go_down_and_up_again_keeping_the_rows(history_db: str) -> None:
    with History(history_db) as h:
        h.add_event("f", _event("a", 0))
        h.add_event("f", _event("b", 0))
        h.add_event("f", _event("a", 1))
        with h.engine.connect() as conn, conn.begin():
            command.downgrade(alembic_config(conn), "0001")
        with h.engine.connect() as conn:
            assert "id" not in {c["name"] for c in sa.inspect(conn).get_columns("events")}
            assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one() == 3
    with History(history_db) as h:
        assert h.schema_before == "0001" and h.schema == head_revision()
        assert [(e.device, e.seq) for e in h.events("f")] == [("a", 0), ("b", 0), ("a", 1)]


def _event(device: str, seq: int):  # type: ignore[no-untyped-def]
    from edge_agent.contracts import DeploymentState, Event

    return Event(device=device, deployment_id="dep-1", seq=seq, state=DeploymentState.ACCEPTED, revision=1)


def test_a_rollout_left_running_by_the_first_schema_resumes_after_the_upgrade(
    fleet_id: str,
    registry: Path,
    signing_key: SigningKey,
    key_file: Path,
    scripted,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """Wave 1 was half sent when the old operator stopped: dev-1 got its desired state (and has
    since installed it, with nobody listening), dev-2 had not been sent anything yet."""
    from build_side.fleet.broker import BrokerSession
    from build_side.fleet.catalog import resolve_bundle
    from build_side.fleet.desired import build_desired, desired_document, desired_payload

    old, new = (
        resolve_bundle(str(registry), "tiny-chat@1.0.0"),
        resolve_bundle(str(registry), "tiny-chat@2.0.0"),
    )
    devs = {
        "dev-0": scripted("dev-0", groups=("lab",), active="tiny-chat@2.0.0"),
        "dev-1": scripted("dev-1", groups=("lab",), active="tiny-chat@1.0.0"),
        "dev-2": scripted("dev-2", groups=("lab",), active="tiny-chat@1.0.0"),
    }
    sent = build_desired(revision=5, bundle=new, key=signing_key, deployment_id="ro-old-w1-dev-1")
    with BrokerSession("mqtt://127.0.0.1:1883", fleet_id) as session:
        session.publish(f"slmops/v1/{fleet_id}/dev-1/desired", desired_payload(sent), retain=True)

    db = tmp_path / "fleet.db"
    con = sqlite3.connect(db, isolation_level=None)
    con.executescript(FIRST_SCHEMA)
    con.execute("INSERT INTO revisions VALUES (?, 5)", (fleet_id,))
    con.execute(
        "INSERT INTO deployments VALUES (?, ?, 'device', 'dev-1', 'tiny-chat@2.0.0', 5, 'ro-old', ?, "
        "'2026-01-01T00:00:00+00:00', '2026-01-01T00:00:01+00:00')",
        (sent.deployment_id, fleet_id, json.dumps(desired_document(sent))),
    )
    params = RolloutParams(wave_timeout_s=20).model_dump_json(exclude={"waves"})  # as the old code wrote them
    con.execute(
        "INSERT INTO rollouts VALUES ('ro-old', ?, 'lab', ?, ?, 'running', '2026-01-01T00:00:00+00:00', "
        "'2026-01-01T00:00:01+00:00', '')",
        (fleet_id, new.model_dump_json(), params),
    )
    con.executemany(
        "INSERT INTO waves (rollout_id, idx, status) VALUES ('ro-old', ?, ?)",
        [(0, "succeeded"), (1, "deploying")],
    )
    con.executemany(
        "INSERT INTO rollout_devices (rollout_id, device, wave, previous, deployment_id, status) "
        "VALUES ('ro-old', ?, ?, ?, ?, ?)",
        [
            ("dev-0", 0, old.model_dump_json(), "ro-old-w0-dev-0", "succeeded"),
            ("dev-1", 1, old.model_dump_json(), sent.deployment_id, "published"),
            ("dev-2", 1, None, None, "pending"),
        ],
    )
    con.close()
    argv = cli(
        "slmops", "rollout", "tiny-chat@2.0.0", "--group", "lab", "--registry", str(registry),
        "--fleet", fleet_id, "--key", str(key_file), "--db", str(db), "--json",
    )  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["id"], report["status"], report["step"]) == ("ro-old", "succeeded", "SUCCEEDED")
    assert [[(d["device"], d["status"]) for d in w["devices"]] for w in report["waves"]] == [
        [("dev-0", "succeeded")],
        [("dev-1", "succeeded"), ("dev-2", "succeeded")],
    ]
    assert [s.deployment_id for s in devs["dev-1"].received] == [sent.deployment_id]  # not sent again
    assert [s.deployment_id for s in devs["dev-2"].received] == ["ro-old-w1-dev-2"]
    assert devs["dev-0"].received == []
    assert devs["dev-2"].received[0].revision > sent.revision
