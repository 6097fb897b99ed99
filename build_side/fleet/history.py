"""The operator's memory in SQLite (stdlib, one file): revisions, deployments, rollouts, events, bench.

Why a database: revisions must only grow, a rollout must survive the operator's process being stopped,
and events and bench records are not retained by the broker, so whatever was seen is kept here.
One connection per `History`, guarded by a lock, because the MQTT thread records events too.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.contracts import BenchRecord, Event

SCHEMA = """
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


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class DeploymentRow:
    deployment_id: str
    fleet: str
    target_kind: str
    target: str
    bundle: str
    revision: int
    rollout_id: str | None
    document: dict[str, Any]
    created: str
    published: str | None


class History:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic step; BEGIN IMMEDIATE so two operator processes never hand out one revision twice."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # revisions ---------------------------------------------------------------------------------------

    def next_revision(self, fleet: str, at_least_above: int = 0) -> int:
        """The next revision of the fleet: above every one handed out here and above `at_least_above`.

        One counter per fleet (not per device) keeps a device's own and its group's desired states
        comparable: whichever was issued later has the higher revision.
        """
        with self.transaction() as db:
            row = db.execute("SELECT last FROM revisions WHERE fleet = ?", (fleet,)).fetchone()
            nxt = max(row["last"] if row else 0, at_least_above) + 1
            db.execute(
                "INSERT INTO revisions (fleet, last) VALUES (?, ?) "
                "ON CONFLICT(fleet) DO UPDATE SET last = excluded.last",
                (fleet, nxt),
            )
            return nxt

    # deployments -------------------------------------------------------------------------------------

    def add_deployment(
        self,
        *,
        fleet: str,
        target_kind: str,
        target: str,
        document: dict[str, Any],
        rollout_id: str | None = None,
    ) -> None:
        bundle = document["bundle"]
        with self.transaction() as db:
            db.execute(
                "INSERT INTO deployments (deployment_id, fleet, target_kind, target, bundle, revision, "
                "rollout_id, document, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    document["deployment_id"],
                    fleet,
                    target_kind,
                    target,
                    f"{bundle['name']}@{bundle['version']}",
                    document["revision"],
                    rollout_id,
                    json.dumps(document),
                    now_iso(),
                ),
            )

    def mark_published(self, deployment_id: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE deployments SET published = ? WHERE deployment_id = ?", (now_iso(), deployment_id)
            )

    def deployment(self, deployment_id: str) -> DeploymentRow | None:
        rows = self.query("SELECT * FROM deployments WHERE deployment_id = ?", (deployment_id,))
        return _deployment_row(rows[0]) if rows else None

    def deployments(self, fleet: str, limit: int = 50) -> list[DeploymentRow]:
        rows = self.query(
            "SELECT * FROM deployments WHERE fleet = ? ORDER BY revision DESC LIMIT ?", (fleet, limit)
        )
        return [_deployment_row(r) for r in rows]

    # events and bench records ------------------------------------------------------------------------

    def add_event(self, fleet: str, event: Event) -> bool:
        """Record an event; False when (device, deployment_id, seq) was seen before (a duplicate)."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO events (fleet, device, deployment_id, seq, state, time, document) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    fleet,
                    event.device,
                    event.deployment_id,
                    event.seq,
                    str(event.state),
                    event.time.isoformat(),
                    event.model_dump_json(by_alias=True),
                ),
            )
            return cur.rowcount == 1

    def events(
        self, fleet: str, device: str | None = None, deployment_id: str | None = None, limit: int = 200
    ) -> list[Event]:
        sql, args = "SELECT document FROM events WHERE fleet = ?", [fleet]
        if device:
            sql, args = sql + " AND device = ?", [*args, device]
        if deployment_id:
            sql, args = sql + " AND deployment_id = ?", [*args, deployment_id]
        rows = self.query(sql + " ORDER BY rowid DESC LIMIT ?", (*args, limit))
        return [Event.model_validate_json(r["document"]) for r in reversed(rows)]

    def last_events(self, fleet: str) -> dict[str, Event]:
        """The latest event seen from each device."""
        rows = self.query(
            "SELECT device, document FROM events WHERE rowid IN "
            "(SELECT MAX(rowid) FROM events WHERE fleet = ? GROUP BY device)",
            (fleet,),
        )
        return {r["device"]: Event.model_validate_json(r["document"]) for r in rows}

    def add_bench(self, fleet: str, device: str, record: BenchRecord) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO bench (fleet, device, time, model, variant, provider, scenario, "
                "document) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    fleet,
                    device,
                    record.time.isoformat(),
                    record.model,
                    record.variant,
                    record.provider,
                    record.scenario,
                    record.model_dump_json(by_alias=True),
                ),
            )
            return cur.rowcount == 1

    def bench_records(self, fleet: str, device: str | None = None) -> list[tuple[str, BenchRecord]]:
        sql, args = "SELECT device, document FROM bench WHERE fleet = ?", [fleet]
        if device:
            sql, args = sql + " AND device = ?", [*args, device]
        rows = self.query(sql + " ORDER BY time, rowid", tuple(args))
        return [(r["device"], BenchRecord.model_validate_json(r["document"])) for r in rows]

    def last_bench(self, fleet: str) -> dict[str, BenchRecord]:
        """The latest bench record seen from each device."""
        return {device: rec for device, rec in self.bench_records(fleet)}


def _deployment_row(r: sqlite3.Row) -> DeploymentRow:
    return DeploymentRow(
        deployment_id=r["deployment_id"],
        fleet=r["fleet"],
        target_kind=r["target_kind"],
        target=r["target"],
        bundle=r["bundle"],
        revision=r["revision"],
        rollout_id=r["rollout_id"],
        document=json.loads(r["document"]),
        created=r["created"],
        published=r["published"],
    )


__all__ = ["DeploymentRow", "History", "now_iso"]
