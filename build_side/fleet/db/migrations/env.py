"""Alembic's entry point for the history database.

slmops runs the migrations itself (build_side.fleet.db.migrate) on a connection it has already
locked and hands it over in `config.attributes["connection"]`. Run by hand (`alembic -x
url=postgresql://... upgrade head` with `script_location` pointing here), it opens the URL given.
"""

from __future__ import annotations

from alembic import context

from build_side.fleet.db.engine import create_engine_for
from build_side.fleet.db.tables import metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    engine = create_engine_for(url)
    with engine.connect() as conn:
        _migrate(conn)
        conn.commit()
    engine.dispose()


def _migrate(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
