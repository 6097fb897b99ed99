"""From `--db` / SLMOPS_DB to a SQLAlchemy engine: SQLite by default, PostgreSQL when asked.

What is accepted: a file path or `sqlite:///path` (the embedded default, one file beside the
operator), or `postgresql://user:password@host:port/database` (a shared history for several
operator machines; psycopg 3 is the driver). Anything else is refused with the accepted forms.

SQLite is opened for several processes at once: WAL (readers never wait for the writer), a busy
timeout, and write transactions that take the write lock when they begin (BEGIN IMMEDIATE), so two
operators never both read a value and then both write on it. synchronous=NORMAL in WAL mode keeps
every committed step across a killed process; a power cut may lose the last commits, which the
revision floor read from the broker's retained states covers.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from build_side.fleet.errors import HistoryError

WRITE = "slmops_write"  # execution option: this connection's transactions write (BEGIN IMMEDIATE)


def database_url(location: str | Path) -> URL:
    """The SQLAlchemy URL for a path or URL given by the operator."""
    text = str(location).strip()
    if not text:
        raise HistoryError("empty history database location: give a file path or a postgresql:// URL")
    if "://" not in text:
        path = Path(text).expanduser().resolve()
        return URL.create("sqlite+pysqlite", database=str(path))
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise HistoryError(f"history database {text!r} is not a URL SQLAlchemy reads: {exc}") from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and url.database and url.database != ":memory:":
        return url.set(drivername="sqlite+pysqlite")
    raise HistoryError(
        f"history database {url.render_as_string(hide_password=True)!r}: use a SQLite file path "
        "(or sqlite:///path) or postgresql://user:password@host:port/database"
    )


def describe(url: URL) -> str:
    """The database as it may be shown: a SQLite file's path, or the URL without driver or password."""
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def create_engine_for(location: str | Path | URL) -> sa.Engine:
    url = location if isinstance(location, URL) else database_url(location)
    if url.get_backend_name() == "sqlite":
        assert url.database
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})
        _sqlite_for_many_processes(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)


def _sqlite_for_many_processes(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # the driver leaves BEGIN to us (below)
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


__all__ = ["WRITE", "create_engine_for", "database_url", "describe"]
