"""The history database on both engines: what it keeps, how it dedupes, and that its schema is the
one the migrations build. Every test here runs on SQLite and on PostgreSQL (`history_db`)."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from build_side.fleet.db import head_revision
from build_side.fleet.db.tables import metadata
from build_side.fleet.errors import HistoryError
from build_side.fleet.history import History
from edge_agent.contracts import BenchMeta, BenchRecord, DeploymentState, Event, Summary
from tests.conftest import cli

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(device: str, seq: int, state: DeploymentState, dep: str = "dep-1") -> Event:
    return Event(
        device=device, deployment_id=dep, seq=seq, state=state, revision=1, time=T0 + timedelta(seconds=seq)
    )


def bench_record(device: str, minutes: int, decode: float) -> BenchRecord:
    return BenchRecord(
        model="tiny-chat@1.0.0",
        variant="cpu-int4",
        engine="onnxruntime-genai",
        provider="CPUExecutionProvider",
        scenario="pp64-tg32",
        time=T0 + timedelta(minutes=minutes),
        meta=BenchMeta(device=device),
        metrics={"decode_tok_s": Summary(unit="tok/s", median=decode, p90=decode, stddev=0.0)},
    )


def test_the_schema_is_the_one_the_migrations_build(history_db: str) -> None:
    with History(history_db) as history:
        assert (history.schema_before, history.schema) == (None, head_revision())
        with history.read() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    with History(history_db) as again:  # opening it again changes nothing
        assert (again.schema_before, again.schema) == (head_revision(), head_revision())


def test_events_are_kept_once_in_arrival_order_and_bench_records_per_device(history_db: str) -> None:
    S = DeploymentState
    with History(history_db) as h:
        assert h.add_event("f", event("a", 0, S.ACCEPTED))
        assert h.add_events("f", [event("b", 0, S.ACCEPTED), event("a", 1, S.DOWNLOADING)]) == [True, True]
        assert not h.add_event("f", event("a", 1, S.DOWNLOADING))  # a duplicate delivery
        assert h.add_events("f", [event("c", 0, S.FAILED, "dep-2")] * 2) == [True, False]
        assert h.add_event("f", event("a", 2, S.SUCCEEDED))
        assert h.add_event("other", event("a", 0, S.FAILED))  # another fleet, its own history
        assert [(e.device, e.seq) for e in h.events("f")] == [
            ("a", 0),
            ("b", 0),
            ("a", 1),
            ("c", 0),
            ("a", 2),
        ]
        assert [e.seq for e in h.events("f", device="a", limit=2)] == [1, 2]
        assert {d: e.state for d, e in h.last_events("f").items()} == {
            "a": S.SUCCEEDED,
            "b": S.ACCEPTED,
            "c": S.FAILED,
        }

        assert h.add_bench("f", "a", bench_record("a", 0, 40.0))
        assert not h.add_bench("f", "a", bench_record("a", 0, 40.0))
        assert h.add_bench("f", "a", bench_record("a", 5, 44.0))
        assert h.add_bench("f", "b", bench_record("b", 1, 30.0))
        assert [(d, r.metrics["decode_tok_s"].median) for d, r in h.bench_records("f")] == [
            ("a", 40.0),
            ("b", 30.0),
            ("a", 44.0),
        ]
        assert {d: r.metrics["decode_tok_s"].median for d, r in h.last_bench("f").items()} == {
            "a": 44.0,
            "b": 30.0,
        }


def test_revisions_only_grow_and_never_repeat_across_writers(history_db: str) -> None:
    with History(history_db) as h:
        assert h.next_revision("f") == 1
        assert h.next_revision("f", at_least_above=10) == 11  # above what the broker already carries
        assert h.next_revision("f", at_least_above=3) == 12
        assert h.next_revision("g") == 1
        handed: list[int] = []

        def take() -> None:
            with History(history_db) as mine:  # its own engine, like another operator process
                handed.extend(mine.next_revision("f") for _ in range(25))

        threads = [threading.Thread(target=take) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(handed) == list(range(13, 113))


def test_deployments_are_recorded_then_marked_published(history_db: str) -> None:
    doc = {"deployment_id": "dep-9", "revision": 7, "bundle": {"name": "tiny-chat", "version": "2.0.0"}}
    with History(history_db) as h:
        h.add_deployment(fleet="f", target_kind="device", target="a", document=doc, rollout_id="ro-1")
        row = h.deployment("dep-9")
        assert row and row.bundle == "tiny-chat@2.0.0" and row.published is None and row.document == doc
        h.mark_published("dep-9")
        assert [(r.deployment_id, r.rollout_id, bool(r.published)) for r in h.deployments("f")] == [
            ("dep-9", "ro-1", True)
        ]
        assert h.deployment("nope") is None


@pytest.mark.parametrize(
    ("location", "says"),
    [
        ("mysql://u:pw@127.0.0.1/db", "use a SQLite file path"),
        (
            "postgresql://u:secret@127.0.0.1:1/x",
            "cannot open history database postgresql://u:***@127.0.0.1:1/x",
        ),
    ],
)
def test_a_bad_database_gets_one_clear_line(location: str, says: str) -> None:
    with pytest.raises(HistoryError, match="history database") as caught:
        History(location)
    assert says in str(caught.value) and "secret" not in str(caught.value)
    proc = subprocess.run(
        cli("slmops", "fleet", "rollouts", "--db", location), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and says in proc.stderr and "secret" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_history_from_a_newer_slmops_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    with History(db) as h, h.write() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(HistoryError, match=r"schema revision '9999'.*newer slmops"):
        History(db)
    with sqlite3.connect(db) as con:  # nothing was changed
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("9999",)]
