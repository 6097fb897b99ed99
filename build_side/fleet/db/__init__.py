"""The history database: tables (SQLAlchemy Core), engines for SQLite and PostgreSQL, migrations."""

from build_side.fleet.db.engine import create_engine_for, database_url, describe
from build_side.fleet.db.migrate import current_revision, head_revision, upgrade

__all__ = [
    "create_engine_for",
    "current_revision",
    "database_url",
    "describe",
    "head_revision",
    "upgrade",
]
