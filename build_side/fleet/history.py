"""The operator's memory: revisions, deployments, rollouts, and the events and bench records it saw.

Why a database: revisions must only grow, a rollout must survive the operator's process being
stopped, and events and bench records are not retained by the broker, so whatever was seen is kept
here. SQLite (one file) is the embedded default; PostgreSQL holds one history for several operator
machines (db/engine.py). Opening a `History` upgrades its schema in place (db/migrate.py).

Every write is one short transaction, safe with other operator processes writing at the same time:
revisions are handed out by one atomic upsert, events and bench records are inserted unless already
there (two operators watching one fleet record each event once).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from build_side.fleet.db import create_engine_for, database_url, describe, upgrade
from build_side.fleet.db.engine import WRITE
from build_side.fleet.db.tables import bench, deployments, events, revisions
from build_side.fleet.errors import HistoryError
from edge_agent.contracts import BenchRecord, Event


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
    """One history database, by file path or URL (`--db`, SLMOPS_DB)."""

    def __init__(self, location: str | Path) -> None:
        self.url = database_url(location)
        self.where = describe(self.url)
        self.engine = create_engine_for(self.url)
        try:
            self.schema_before, self.schema = upgrade(self.engine)
        except OperationalError as exc:
            self.engine.dispose()
            raise HistoryError(f"cannot open history database {self.where}: {_reason(exc)}") from None
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One atomic step that writes (on SQLite it holds the write lock from its start)."""
        with self.engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
            yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    def insert_new(self, conn: sa.Connection, table: sa.Table, row: dict[str, Any]) -> bool:
        """Insert `row` unless one with the same unique key exists; True when it was new."""
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)
        stmt = insert.values(row).on_conflict_do_nothing().returning(*table.primary_key.columns)
        return conn.execute(stmt).first() is not None  # a row comes back only when one was inserted

    # revisions ---------------------------------------------------------------------------------------

    def next_revision(self, fleet: str, at_least_above: int = 0) -> int:
        """The next revision of the fleet: above every one handed out here and above `at_least_above`.

        One counter per fleet (not per device) keeps a device's own and its group's desired states
        comparable: whichever was issued later has the higher revision.
        """
        return self.next_revisions(fleet, 1, at_least_above)[0]

    def next_revisions(self, fleet: str, count: int, at_least_above: int = 0) -> list[int]:
        """`count` consecutive revisions above every one handed out and above `at_least_above`.

        One statement (an upsert that returns the new counter), so two operator processes never
        hand out the same revision, on either engine.
        """
        pg = self.dialect == "postgresql"
        insert = (postgresql.insert if pg else sqlite.insert)(revisions)
        raised = (sa.func.greatest if pg else sa.func.max)(revisions.c.last + count, at_least_above + count)
        stmt = (
            insert.values(fleet=fleet, last=at_least_above + count)
            .on_conflict_do_update(index_elements=[revisions.c.fleet], set_={"last": raised})
            .returning(revisions.c.last)
        )
        with self.write() as conn:
            last = int(conn.execute(stmt).scalar_one())
        return list(range(last - count + 1, last + 1))

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
        with self.write() as conn:
            conn.execute(
                deployments.insert().values(
                    deployment_values(fleet, target_kind, target, document, rollout_id)
                )
            )

    def mark_published(self, *deployment_ids: str) -> None:
        with self.write() as conn:
            conn.execute(
                deployments.update()
                .where(deployments.c.deployment_id.in_(deployment_ids))
                .values(published=now_iso())
            )

    def deployment(self, deployment_id: str) -> DeploymentRow | None:
        with self.read() as conn:
            row = conn.execute(
                sa.select(deployments).where(deployments.c.deployment_id == deployment_id)
            ).first()
        return _deployment_row(row) if row else None

    def deployments(self, fleet: str, limit: int = 50) -> list[DeploymentRow]:
        with self.read() as conn:
            rows = conn.execute(
                sa.select(deployments)
                .where(deployments.c.fleet == fleet)
                .order_by(deployments.c.revision.desc())
                .limit(limit)
            ).all()
        return [_deployment_row(r) for r in rows]

    # events and bench records ------------------------------------------------------------------------

    def add_event(self, fleet: str, event: Event) -> bool:
        """Record an event; False when (device, deployment_id, seq) was seen before (a duplicate)."""
        return self.add_events(fleet, [event])[0]

    def add_events(self, fleet: str, batch: list[Event]) -> list[bool]:
        """Record several events in one statement; for each, whether it was new.

        Events are observations (a device's retained reported state sums them up), so on PostgreSQL
        this commit does not wait for the disk flush (synchronous_commit off), like SQLite's
        synchronous=NORMAL: a server crash may lose the last moment of events, never a deployment
        or a rollout step, which keep waiting for the flush.
        """
        if not batch:
            return []
        pg = self.dialect == "postgresql"
        insert = (postgresql.insert if pg else sqlite.insert)(events)
        key = (events.c.device, events.c.deployment_id, events.c.seq)
        rows = [_event_row(fleet, e) for e in batch]
        added: set[tuple] = set()
        with self.write() as conn:
            if pg:
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            for i in range(0, len(rows), 500):  # within both engines' limits on bound parameters
                stmt = insert.values(rows[i : i + 500]).on_conflict_do_nothing().returning(*key)
                added.update(tuple(row) for row in conn.execute(stmt))
        new = []
        for e in batch:  # a key twice in one batch is new once
            k = (e.device, e.deployment_id, e.seq)
            new.append(k in added)
            added.discard(k)
        return new

    def events(
        self, fleet: str, device: str | None = None, deployment_id: str | None = None, limit: int = 200
    ) -> list[Event]:
        query = sa.select(events.c.document).where(events.c.fleet == fleet)
        if device:
            query = query.where(events.c.device == device)
        if deployment_id:
            query = query.where(events.c.deployment_id == deployment_id)
        with self.read() as conn:
            docs = conn.scalars(query.order_by(events.c.id.desc()).limit(limit)).all()
        return [Event.model_validate_json(d) for d in reversed(docs)]

    def last_events(self, fleet: str) -> dict[str, Event]:
        """The latest event seen from each device."""
        return {d: Event.model_validate_json(doc) for d, doc in self._latest(events, fleet)}

    def add_bench(self, fleet: str, device: str, record: BenchRecord) -> bool:
        row = {
            "fleet": fleet,
            "device": device,
            "time": record.time.isoformat(),
            "model": record.model,
            "variant": record.variant,
            "provider": record.provider,
            "scenario": record.scenario,
            "document": record.model_dump_json(by_alias=True),
        }
        with self.write() as conn:
            return self.insert_new(conn, bench, row)

    def bench_records(self, fleet: str, device: str | None = None) -> list[tuple[str, BenchRecord]]:
        query = sa.select(bench.c.device, bench.c.document).where(bench.c.fleet == fleet)
        if device:
            query = query.where(bench.c.device == device)
        with self.read() as conn:
            rows = conn.execute(query.order_by(bench.c.time, bench.c.id)).all()
        return [(d, BenchRecord.model_validate_json(doc)) for d, doc in rows]

    def last_bench(self, fleet: str) -> dict[str, BenchRecord]:
        """The latest bench record seen from each device."""
        return {d: BenchRecord.model_validate_json(doc) for d, doc in self._latest(bench, fleet)}

    def _latest(self, table: sa.Table, fleet: str) -> list[tuple[str, str]]:
        """(device, document) of each device's newest row: one indexed lookup per device."""
        newest = sa.select(sa.func.max(table.c.id)).where(table.c.fleet == fleet).group_by(table.c.device)
        with self.read() as conn:
            rows = conn.execute(sa.select(table.c.device, table.c.document).where(table.c.id.in_(newest)))
            return [(d, doc) for d, doc in rows]


def deployment_values(
    fleet: str, target_kind: str, target: str, document: dict[str, Any], rollout_id: str | None
) -> dict[str, Any]:
    """A `deployments` row for a signed desired state about to be published."""
    bundle_ref = document["bundle"]
    return {
        "deployment_id": document["deployment_id"],
        "fleet": fleet,
        "target_kind": target_kind,
        "target": target,
        "bundle": f"{bundle_ref['name']}@{bundle_ref['version']}",
        "revision": document["revision"],
        "rollout_id": rollout_id,
        "document": json.dumps(document),
        "created": now_iso(),
    }


def _event_row(fleet: str, event: Event) -> dict[str, Any]:
    return {
        "fleet": fleet,
        "device": event.device,
        "deployment_id": event.deployment_id,
        "seq": event.seq,
        "state": str(event.state),
        "time": event.time.isoformat(),
        "document": event.model_dump_json(by_alias=True),
    }


def _deployment_row(r: sa.Row) -> DeploymentRow:
    return DeploymentRow(
        deployment_id=r.deployment_id,
        fleet=r.fleet,
        target_kind=r.target_kind,
        target=r.target,
        bundle=r.bundle,
        revision=r.revision,
        rollout_id=r.rollout_id,
        document=json.loads(r.document),
        created=r.created,
        published=r.published,
    )


def _reason(exc: OperationalError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)


__all__ = ["DeploymentRow", "History", "deployment_values", "now_iso"]
