"""The first schema: the tables the hand-written `CREATE TABLE IF NOT EXISTS` script made.

A SQLite history made before migrations existed has exactly these tables and no alembic_version
table; slmops stamps it with this revision and upgrades it from here.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revisions",
        sa.Column("fleet", sa.Text, primary_key=True),
        sa.Column("last", sa.Integer, nullable=False),
    )
    op.create_table(
        "deployments",
        sa.Column("deployment_id", sa.Text, primary_key=True),
        sa.Column("fleet", sa.Text, nullable=False),
        sa.Column("target_kind", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("bundle", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("rollout_id", sa.Text),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("published", sa.Text),
    )
    op.create_table(
        "events",
        sa.Column("fleet", sa.Text, nullable=False),
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("deployment_id", sa.Text, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("time", sa.Text, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("fleet", "device", "deployment_id", "seq"),
    )
    op.create_table(
        "bench",
        sa.Column("fleet", sa.Text, nullable=False),
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("time", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("variant", sa.Text, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("scenario", sa.Text, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("fleet", "device", "time", "model", "variant", "provider", "scenario"),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("fleet", sa.Text, nullable=False),
        sa.Column("grp", sa.Text, nullable=False),
        sa.Column("bundle", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("updated", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
    )
    op.create_table(
        "rollout_devices",
        sa.Column("rollout_id", sa.Text, nullable=False),
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("wave", sa.Integer, nullable=False),
        sa.Column("previous", sa.Text),
        sa.Column("deployment_id", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("rollback_deployment_id", sa.Text),
        sa.Column("rollback_status", sa.Text),
        sa.PrimaryKeyConstraint("rollout_id", "device"),
    )
    op.create_table(
        "waves",
        sa.Column("rollout_id", sa.Text, nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("started", sa.Text),
        sa.Column("finished", sa.Text),
        sa.PrimaryKeyConstraint("rollout_id", "idx"),
    )


def downgrade() -> None:
    for table in ("waves", "rollout_devices", "rollouts", "bench", "events", "deployments", "revisions"):
        op.drop_table(table)
