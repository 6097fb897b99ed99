"""The history's tables as SQLAlchemy Core, the one description queries are written against.

The migrations in `migrations/versions/` build exactly this (a test compares the two on SQLite and
PostgreSQL). Times are ISO 8601 text in UTC, as the first, hand-written schema kept them, so a
database from then upgrades without rewriting a row. Documents (desired states, events, bench
records) are kept whole as JSON text beside the columns queries filter on.
"""

from __future__ import annotations

import sqlalchemy as sa

# Deterministic constraint names, so a migration can name what it changes on either engine.
NAMING = {
    "pk": "pk_%(table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
}

# A 64-bit key on PostgreSQL; SQLite only numbers a column declared exactly INTEGER PRIMARY KEY.
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData(naming_convention=NAMING)

revisions = sa.Table(
    "revisions",
    metadata,
    sa.Column("fleet", sa.Text, primary_key=True),
    sa.Column("last", sa.Integer, nullable=False),  # the highest revision handed out in the fleet
)

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("deployment_id", sa.Text, primary_key=True),
    sa.Column("fleet", sa.Text, nullable=False),
    sa.Column("target_kind", sa.Text, nullable=False),  # device, group or channel
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("bundle", sa.Text, nullable=False),  # name@version
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("rollout_id", sa.Text),
    sa.Column("document", sa.Text, nullable=False),  # the signed desired state as published
    sa.Column("created", sa.Text, nullable=False),
    sa.Column("published", sa.Text),  # set once the broker acknowledged (or the file was written)
    sa.Index(None, "fleet", "revision"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),  # arrival order
    sa.Column("fleet", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("deployment_id", sa.Text, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("time", sa.Text, nullable=False),
    sa.Column("document", sa.Text, nullable=False),
    sa.UniqueConstraint("fleet", "device", "deployment_id", "seq"),  # receivers dedupe on this
    sa.Index(None, "fleet", "device", "id"),
)

bench = sa.Table(
    "bench",
    metadata,
    sa.Column("id", RowId, primary_key=True, autoincrement=True),
    sa.Column("fleet", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("time", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("variant", sa.Text, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("scenario", sa.Text, nullable=False),
    sa.Column("document", sa.Text, nullable=False),
    sa.UniqueConstraint("fleet", "device", "time", "model", "variant", "provider", "scenario"),
    sa.Index(None, "fleet", "device", "id"),
)

rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("fleet", sa.Text, nullable=False),
    sa.Column("grp", sa.Text, nullable=False),
    sa.Column("bundle", sa.Text, nullable=False),  # BundleRef JSON of the target
    sa.Column("params", sa.Text, nullable=False),  # RolloutParams JSON
    sa.Column("status", sa.Text, nullable=False),  # running, rolling-back, succeeded, rolled-back, abandoned
    sa.Column("created", sa.Text, nullable=False),
    sa.Column("updated", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("step", sa.Text, nullable=False, server_default="PLANNED"),  # rollout_machine.Step
    sa.Column("wave", sa.Integer, nullable=False, server_default="0"),  # the wave the step is about
    sa.Index(None, "fleet", "grp"),
)

rollout_devices = sa.Table(
    "rollout_devices",
    metadata,
    sa.Column("rollout_id", sa.Text, primary_key=True),
    sa.Column("device", sa.Text, primary_key=True),
    sa.Column("wave", sa.Integer, nullable=False),  # -1: skipped, in no wave
    sa.Column("previous", sa.Text),  # BundleRef JSON the device ran before, if any
    sa.Column("deployment_id", sa.Text),
    sa.Column(
        "status", sa.Text, nullable=False
    ),  # pending, publishing, published, succeeded, failed, skipped
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Column("rollback_deployment_id", sa.Text),
    sa.Column("rollback_status", sa.Text),  # publishing, published, succeeded, failed, none
    sa.Index(None, "rollout_id", "wave"),
)

waves = sa.Table(
    "waves",
    metadata,
    sa.Column("rollout_id", sa.Text, primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),  # pending, deploying, succeeded, failed, rolled-back
    sa.Column("started", sa.Text),
    sa.Column("finished", sa.Text),
)

__all__ = [
    "NAMING",
    "bench",
    "deployments",
    "events",
    "metadata",
    "revisions",
    "rollout_devices",
    "rollouts",
    "waves",
]
