"""Engine construction: driver choice, SQLite writer serialization, pool sizing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from domain.settings import Settings

# Execution option a read-only session sets so SQLite opens a deferred transaction.
READ_ONLY = "stockyard_read_only"


def sqlalchemy_url(url: str) -> str:
    """Map the plain URLs API.md promises onto the drivers Stockyard uses."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(settings: Settings, **kwargs: Any) -> Engine:
    url = sqlalchemy_url(settings.database_url)
    if settings.is_sqlite:
        path = settings.sqlite_path()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 60, "check_same_thread": False}, **kwargs
        )
        _serialize_sqlite_writers(engine)
        return engine
    kwargs.setdefault("pool_size", settings.db_pool_size)
    kwargs.setdefault("max_overflow", 4)
    kwargs.setdefault("pool_pre_ping", False)
    return create_engine(url, **kwargs)


def _serialize_sqlite_writers(engine: Engine) -> None:
    """Open every writing transaction with BEGIN IMMEDIATE.

    pysqlite's default deferred BEGIN lets two writers both read, then fail with
    "database is locked" on upgrade; IMMEDIATE makes the second wait (busy timeout).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def session_factories(engine: Engine) -> tuple[sessionmaker[Session], sessionmaker[Session]]:
    """(writer, reader) session factories; the reader never takes SQLite's write lock."""
    writer = sessionmaker(engine, expire_on_commit=False)
    reader = sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
    return writer, reader
