"""Rollouts as a state machine (`step`, `wave`), events and bench records numbered in arrival order.

SQLite numbered rows by itself (rowid) and the first schema ordered by it; PostgreSQL has no such
number, so events and bench get an `id` of their own (their old primary key stays, as a unique
constraint). Both tables are rebuilt and their rows copied in the order they arrived. Each rollout
gets the step it stood in, read from its status and its waves as the first schema recorded them.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

EVENT_COLUMNS = ["fleet", "device", "deployment_id", "seq", "state", "time", "document"]
BENCH_COLUMNS = ["fleet", "device", "time", "model", "variant", "provider", "scenario", "document"]


def upgrade() -> None:
    _renumber(
        "events",
        EVENT_COLUMNS,
        ["fleet", "device", "deployment_id", "seq"],
        [sa.Column(c, sa.Integer if c == "seq" else sa.Text, nullable=False) for c in EVENT_COLUMNS],
        order="time, seq",
    )
    _renumber(
        "bench",
        BENCH_COLUMNS,
        BENCH_COLUMNS[:-1],
        [sa.Column(c, sa.Text, nullable=False) for c in BENCH_COLUMNS],
        order="time",
    )
    op.add_column("rollouts", sa.Column("step", sa.Text, nullable=False, server_default="PLANNED"))
    op.add_column("rollouts", sa.Column("wave", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_rollouts_fleet_grp", "rollouts", ["fleet", "grp"])
    op.create_index("ix_rollout_devices_rollout_id_wave", "rollout_devices", ["rollout_id", "wave"])
    op.create_index("ix_deployments_fleet_revision", "deployments", ["fleet", "revision"])
    _set_steps()


def _renumber(
    table: str, columns: list[str], key: list[str], definitions: list[sa.Column], order: str
) -> None:
    """Rebuild `table` with an `id` primary key, copying its rows in the order they arrived."""
    bind = op.get_bind()
    old = f"{table}_v1"
    op.rename_table(table, old)
    if bind.dialect.name == "postgresql":  # constraint names are per schema there: free the old one
        op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT pk_{table} TO pk_{old}")
    op.create_table(
        table,
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        *definitions,
        sa.UniqueConstraint(*key, name=f"uq_{table}_{'_'.join(key)}"),
    )
    op.create_index(f"ix_{table}_fleet_device_id", table, ["fleet", "device", "id"])
    names = ", ".join(columns)
    arrival = "rowid" if bind.dialect.name == "sqlite" else order
    op.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {old} ORDER BY {arrival}")
    op.drop_table(old)


def _set_steps() -> None:
    """The step each recorded rollout stood in, from its status and its waves' statuses."""
    bind = op.get_bind()
    rollouts = bind.execute(sa.text("SELECT id, status FROM rollouts")).all()
    for rollout_id, status in rollouts:
        waves = bind.execute(
            sa.text("SELECT idx, status FROM waves WHERE rollout_id = :id ORDER BY idx"), {"id": rollout_id}
        ).all()
        started = [(idx, st) for idx, st in waves if st != "pending"]
        last, last_status = started[-1] if started else (0, "pending")
        if status == "succeeded":
            step, wave = "SUCCEEDED", waves[-1][0] if waves else 0
        elif status == "rolled-back":
            step, wave = "ROLLED_BACK", last
        elif status == "rolling-back":
            step, wave = "ROLLING_BACK", last
        elif status == "running" and not started:
            step, wave = "PLANNED", 0
        elif status == "running" and last_status == "deploying":
            step, wave = "DEPLOYING", last
        elif status == "running":  # the last wave started has finished: decide what comes next again
            step, wave = "EVALUATING", last
        else:  # abandoned, stopped
            step, wave = "ABANDONED", last
        bind.execute(
            sa.text("UPDATE rollouts SET step = :step, wave = :wave WHERE id = :id"),
            {"step": step, "wave": wave, "id": rollout_id},
        )


def downgrade() -> None:
    op.drop_index("ix_deployments_fleet_revision", "deployments")
    op.drop_index("ix_rollout_devices_rollout_id_wave", "rollout_devices")
    op.drop_index("ix_rollouts_fleet_grp", "rollouts")
    with op.batch_alter_table("rollouts") as batch:
        batch.drop_column("wave")
        batch.drop_column("step")
    for table, columns, key in (
        ("bench", BENCH_COLUMNS, BENCH_COLUMNS[:-1]),
        ("events", EVENT_COLUMNS, ["fleet", "device", "deployment_id", "seq"]),
    ):
        op.drop_index(f"ix_{table}_fleet_device_id", table)
        names = ", ".join(columns)
        op.rename_table(table, f"{table}_v2")
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"ALTER TABLE {table}_v2 RENAME CONSTRAINT pk_{table} TO pk_{table}_v2")
        op.create_table(
            table,
            *[sa.Column(c, sa.Integer if c == "seq" else sa.Text, nullable=False) for c in columns],
            sa.PrimaryKeyConstraint(*key, name=f"pk_{table}"),
        )
        op.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {table}_v2 ORDER BY id")
        op.drop_table(f"{table}_v2")
