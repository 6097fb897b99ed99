"""Bring a history database to the schema this code reads, in place, once, whoever gets there first.

Alembic owns the schema (migrations/versions). A SQLite file made before migrations existed has the
first schema's tables and no alembic_version table: it is stamped with the first revision, then
upgraded like any other. Two operator processes opening a fresh or old database at once must not
both migrate it: the upgrade runs inside one write transaction that holds the database's lock
(BEGIN IMMEDIATE on SQLite, a transaction-level advisory lock on PostgreSQL), and whoever waited
finds it done. Both engines run DDL transactionally, so a failed upgrade leaves the old schema.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from build_side.fleet.db.engine import WRITE, describe
from build_side.fleet.errors import HistoryError

MIGRATIONS = Path(__file__).parent / "migrations"
FIRST_REVISION = "0001"
FIRST_SCHEMA_TABLES = frozenset(
    {"revisions", "deployments", "events", "bench", "rollouts", "rollout_devices", "waves"}
)
ADVISORY_LOCK = 0x736C6D6F7073  # "slmops": one number every operator agrees on


def alembic_config(connection: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine) -> tuple[str | None, str]:
    """Upgrade to the newest schema; returns (revision before, revision now)."""
    head = head_revision()
    with engine.connect() as conn:
        before = current_revision(conn)
    if before == head:
        return before, head
    with engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK)))
        before = current_revision(conn)  # again, under the lock: another process may have done it
        if before == head:
            return before, head
        cfg = alembic_config(conn)
        try:
            if before is None and set(sa.inspect(conn).get_table_names()) >= FIRST_SCHEMA_TABLES:
                command.stamp(cfg, FIRST_REVISION)  # made by the hand-written first schema
            command.upgrade(cfg, "head")
        except CommandError as exc:  # e.g. a revision newer than this code knows
            raise HistoryError(
                f"history database {describe(engine.url)} is at schema revision {before!r}, which this "
                f"slmops cannot upgrade to {head!r} ({exc}); is a newer slmops writing to it?"
            ) from None
    return before, head


__all__ = ["FIRST_REVISION", "MIGRATIONS", "alembic_config", "current_revision", "head_revision", "upgrade"]
